"""Every record key, metric name and file name zk0 uses, named once.

Flower record keys (``proximal-mu``, ``num-examples``) are Flower's own spelling;
metric names follow the upstream zk0 project so that its analysis habits carry over.
"""

from typing import Final

# --- Flower record keys (Message API) ----------------------------------------------------
ARRAYS_KEY: Final = "arrays"  # the ArrayRecord of trainable tensors in train/evaluate messages
METRICS_KEY: Final = "metrics"  # the MetricRecord of numbers in a reply
INFO_KEY: Final = "info"  # the ConfigRecord of strings (dataset_name, param_hash, errors)
CONFIG_KEY: Final = "config"  # the ConfigRecord of the round's train config
PROXIMAL_MU_KEY: Final = "proximal-mu"  # set by Flower's FedProx.configure_train
NUM_EXAMPLES_KEY: Final = "num-examples"  # weighting key of Flower's FedAvg
LR_KEY: Final = "lr"
STEPS_KEY: Final = "steps"
SERVER_ROUND_KEY: Final = "server-round"  # Flower's round counter (restarts at 1 on resume)
ROUND_KEY: Final = "zk0-round"  # the run's round number (continues across resumes)
RUN_CONFIG_PATH_KEY: Final = "zk0-config"  # run_config key holding the absolute config.json path
RUN_DIR_KEY: Final = "zk0-run-dir"  # run_config key holding the absolute run directory
NODE_DATASET_KEY: Final = "dataset"  # SuperNode node config: repo id or name of its dataset
NODE_DATASET_ROOT_KEY: Final = "dataset-root"  # SuperNode node config: local dataset root
PARTITION_ID_KEY: Final = "partition-id"  # simulation node config
NUM_PARTITIONS_KEY: Final = "num-partitions"

# --- client metrics (upstream zk0 names) ---------------------------------------------------
LOSS: Final = "loss"  # total objective = policy_loss + fedprox_loss, mean over the round
POLICY_LOSS: Final = "policy_loss"  # SmolVLA flow-matching MSE, mean over the round
FEDPROX_LOSS: Final = "fedprox_loss"  # (mu/2)·Σ‖w − w_global‖², mean over the round
GRAD_NORM: Final = "grad_norm"  # global L2 norm of gradients before clipping, mean over steps
PARAM_UPDATE_NORM: Final = "param_update_norm"  # ‖w_end − w_start‖ over trainable tensors
PARAM_HASH: Final = "param_hash"  # SHA-256 of the tensors sent
NUM_STEPS: Final = "num_steps"
NUM_EXAMPLES: Final = "num_examples"
SECONDS: Final = "seconds"
DATASET_NAME: Final = "dataset_name"
CLIENT_ID: Final = "client_id"
ERROR: Final = "error"  # set in the INFO record when a client's round failed
FAILED: Final = "failed"  # 1.0 in the METRICS record when a client's round failed

# --- the logger ----------------------------------------------------------------------------
LOGGER_NAME: Final = "zk0"

# --- environment for offline, quiet Flower/Ray/HF processes -------------------------------
QUIET_ENV: Final = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}

# --- federated normalisation statistics (appended) -----------------------------------------
STATS_ACTION: Final = "stats"  # ClientApp query action: message type "query.stats"
STATS_KEY: Final = "zk0-stats"  # JSON sufficient statistics (query reply; merged, train config)
IMAGE_FRAMES_KEY: Final = "image-frames"  # query config: frames sampled for camera statistics

# --- multi-site federation (appended) -----------------------------------------------------
INSTRUCTION_KEY: Final = "zk0-instruction"  # train/query config: the RunInstruction as JSON
JOIN_ACTION: Final = "join"  # ClientApp query action: message type "query.join"
JOIN_REPORT_KEY: Final = "zk0-join"  # query.join reply: the site's JoinReport as JSON
NODE_SITE_CONFIG_KEY: Final = "site-config"  # SuperNode node config: the site file (JSON)
JOIN_CHECK_FIELD: Final = "join_check"  # run.json: one JoinReport per site (deployment)
