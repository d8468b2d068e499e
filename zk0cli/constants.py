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
RAY_NODE_ID: Final = "ray_node_id"  # the Ray node a simulated client's round ran on
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

# --- experiment tracking (TensorBoard, Weights & Biases) -----------------------------------
TRACKING_EXTRA: Final = "tracking"  # pip extra: pip install 'zk0cli[tracking]'
RUN_TRACKING_KEY: Final = "tracking"  # run.json: {tracker name: what the tracker recorded}
TB_SERVER_EVAL: Final = "server/eval_loss"  # server/eval_loss/<dataset>, .../composite
TB_COMPOSITE: Final = "composite"
TB_CLIENTS_AGG: Final = "clients"  # clients/<metric>_avg, clients/<metric>_std, clients/num_*
TB_CLIENT: Final = "client"  # client/<client_id>/<metric>
TB_ROUND: Final = "round"  # round/lr, round/proximal_mu, round/seconds, round/bytes_sent
ROUND_SCALAR_FIELDS: Final = ("lr", "proximal_mu", "seconds", "bytes_sent")  # round-file keys
WANDB_ID: Final = "id"  # run.json tracking.wandb: the W&B run id (kept for --resume)
WANDB_MODE: Final = "mode"  # the mode the run actually used (online|offline)
WANDB_URL: Final = "url"  # the run's page (online runs only)
WANDB_SYNC_COMMAND: Final = "sync_command"  # `wandb sync <dir>` for offline runs
# --- what a user sees (issue 23) -----------------------------------------------------------
PROGRESS_PHASE: Final = "phase"  # e.g. "statistics", "round 0 evaluation", "round 3 training"
PROGRESS_ROUND: Final = "round"  # the run's round being trained (0 before round 1)
PROGRESS_SENT: Final = "sent"  # messages sent in the current exchange
PROGRESS_REPLIES: Final = "replies"  # replies received so far in the current exchange
# --- one owner per run (owner) -------------------------------------------------------------
OWNER_WATCH_INTERVAL_S: Final = 0.5  # how often the watchdog checks the owner
OWNER_GONE_BOUND_S: Final = 30.0  # every process of a run is gone this long after its owner
SIM_ACTOR_MAX_RESTARTS: Final = -1  # Ray restarts a dead simulated client's actor (unlimited)
# --- strategies (issue 18) -------------------------------------------------------------------
STRATEGY_FEDAVG: Final = "fedavg"
STRATEGY_FEDPROX: Final = "fedprox"
STRATEGY_FEDAVGM: Final = "fedavgm"
STRATEGY_FEDADAM: Final = "fedadam"
STRATEGY_FEDYOGI: Final = "fedyogi"
STRATEGY_FEDADAGRAD: Final = "fedadagrad"
# --- multi-site federation (appended) -----------------------------------------------------
INSTRUCTION_KEY: Final = "zk0-instruction"  # train/query config: the RunInstruction as JSON
JOIN_ACTION: Final = "join"  # ClientApp query action: message type "query.join"
JOIN_REPORT_KEY: Final = "zk0-join"  # query.join reply: the site's JoinReport as JSON
NODE_SITE_CONFIG_KEY: Final = "site-config"  # SuperNode node config: the site file (JSON)

# --- differential privacy (zk0cli.core.privacy) ---------------------------------------------
DP_EPSILON_KEY: Final = "zk0-dp-epsilon"  # train config: epsilon after this round if released
DP_PRE_CLIP_NORM: Final = "dp_update_norm"  # client metric: ‖Δ‖ before the client clipped it
