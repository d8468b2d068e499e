"""The join check before round 1: every site checks its dataset against the policy.

The server sends a Flower query message (``message_type = "query.join"``) with the run's
instruction to every connected site. Each site compares its dataset, after its own rename
map, with the policy's input features (:func:`zk0cli.core.site.join_report`) and answers
with its :class:`~zk0cli.core.site.JoinReport`. The server logs one report per site; when
fewer than ``federation.min_clients`` sites pass, the run stops before round 1 with
:class:`JoinCheckError` (``zk0 train`` exits 2 and prints the reports with their fixes).
"""

from __future__ import annotations

from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from zk0cli import constants as K
from zk0cli.core.config import RunConfig
from zk0cli.core.site import JoinReport
from zk0cli.errors import FederationError
from zk0cli.log import logger


class JoinCheckError(FederationError):
    """Fewer sites than ``federation.min_clients`` passed the join check.

    Attributes:
        reports: One report per site that answered (or failed to).
    """

    def __init__(self, reports: list[JoinReport], need: int) -> None:
        self.reports = reports
        passed = sum(r.ok for r in reports)
        body = "\n".join(r.describe() for r in reports) or "(no site answered)"
        super().__init__(
            f"join check: {passed} of {len(reports)} site(s) can train this policy, "
            f"federation.min_clients = {need}; stopped before round 1.\n{body}")


def query_join(grid: Any, cfg: RunConfig, instruction: Any) -> list[JoinReport]:
    """Ask every connected site for its join report (server side).

    Waits up to ``federation.node_wait_timeout_s`` (else ``round_timeout_s``) for
    ``num_clients`` nodes, then queries the connected ones.

    Args:
        grid: The ServerApp's Flower ``Grid``.
        cfg: The run configuration.
        instruction: The run's :class:`~zk0cli.core.contract.instruction.RunInstruction`.

    Returns:
        One report per queried node (a node that errored gets a failed report).

    Raises:
        JoinCheckError: Fewer than ``federation.min_clients`` sites passed.
    """
    from zk0cli.core.contract.instruction import encode
    from zk0cli.core.strategy import wait_for_nodes

    fed = cfg.federation
    node_ids = wait_for_nodes(grid, cfg.num_clients,
                              timeout_s=fed.node_wait_timeout_s or fed.round_timeout_s)
    messages = [Message(RecordDict({K.CONFIG_KEY: ConfigRecord(encode(instruction))}),
                        dst_node_id=n, message_type=f"{MessageType.QUERY}.{K.JOIN_ACTION}")
                for n in node_ids]
    reports = []
    for reply in grid.send_and_receive(messages, timeout=fed.round_timeout_s):
        node = str(reply.metadata.src_node_id)
        if reply.has_error():
            reports.append(JoinReport(client_id=node, dataset="?", ok=False,
                                      problems=[f"node error: {reply.error.reason}"]))
            continue
        info = reply.content.config_records.get(K.INFO_KEY, ConfigRecord())
        try:
            reports.append(JoinReport.model_validate_json(str(info[K.JOIN_REPORT_KEY])))
        except (KeyError, ValueError) as err:
            reports.append(JoinReport(client_id=str(info.get(K.CLIENT_ID, node)),
                                      dataset="?", ok=False,
                                      problems=[f"unreadable join reply ({err})"]))
    for r in reports:
        logger.info("join check: %s", r.describe())
    if sum(r.ok for r in reports) < fed.min_clients:
        raise JoinCheckError(sorted(reports, key=lambda r: r.client_id), fed.min_clients)
    return reports
