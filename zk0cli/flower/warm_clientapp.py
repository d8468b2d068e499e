"""A warm ClientApp process: one long-lived process runs every message of a SuperNode.

Flower's default ``flower-supernode --isolation subprocess`` starts ``flower-superexec``,
which starts a fresh ``flwr-clientapp`` process for every message; Flower 1.42's
``flwr-clientapp`` runs exactly one task and exits (``flwr/supernode/runtime/
run_clientapp.py`` ends in ``flwr_exit``). Each zk0 message then re-imports torch and
LeRobot and rebuilds the policy and the dataset (~19 s per round on 2 cores).

With ``flower-supernode --isolation process`` the SuperNode starts no executor: a
separately started process claims its tasks on the Runtime API. This module is that
process. It does what ``flower-superexec`` + ``flwr-clientapp`` do for one task
(claim a task with ``AcquireTask``, pull its message, context and app bundle, run the
ClientApp, push the reply and the context), but in a loop and in one process, so the
ClientApp's per-process warm state (:data:`zk0cli.flower.client_app._CACHE`: the
policy and the open dataset) survives from one message, round and run to the next.
The ClientApp is loaded from the app bundle like Flower does (the bundle's
``[tool.flwr.app.components] clientapp``, imported once per process).

It exits when the SuperNode whose pid it is given is gone (Flower's parent monitor), on
SIGTERM/SIGINT, and when zk0 (its parent) dies (``PR_SET_PDEATHSIG``, set by
:func:`zk0cli.engine.flwr_proc.start_process`). zk0 restarts it if it exits while its
SuperNode runs (:class:`zk0cli.engine.warm.WarmClientApp`). A task whose process died
mid-way is failed by the SuperNode when its heartbeat stops (an error reply).

Run as ``python -m zk0cli.flower.warm_clientapp --runtime-api-address 127.0.0.1:PORT
--parent-pid PID`` (``PORT``: the SuperNode's ``--port``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

from zk0cli.log import logger

#: Seconds between two ``AcquireTask`` calls when the SuperNode has no task.
DEFAULT_POLL_S = 0.2
_COMPONENT_EXECUTOR = "SuperExec"
_COMPONENT_APP = "flwr-clientapp"


def _client(address: str, component: str, token: str | None = None) -> Any:
    """A Runtime API HTTP client (plain HTTP on the SuperNode's loopback port)."""
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.runtime.tracing import RuntimeTracingInterceptor

    interceptors: list[Any] = [RuntimeTracingInterceptor(),
                               RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=interceptors, retry_invoker=make_simple_http_retry_invoker())


#: Backoff (seconds) when the message's objects are not yet in the SuperNode's store. A
#: warm ClientApp claims a task as soon as the SuperNode creates it, before the SuperNode
#: has pulled the message's objects from the SuperLink; Flower's defaults (1 s, doubling to
#: 10 s: made for a process that needs seconds to start) then cost ~7 s per message.
PULL_BACKOFF_S = 0.05
PULL_BACKOFF_CAP_S = 0.25


def pull_task_input(client: Any) -> tuple[Any, Any, Any, Any]:
    """The task's message, context, run and app bundle, as ``flwr-clientapp`` pulls them.

    The same calls as Flower's ``flwr.supernode.runtime.run_clientapp.pull_task_input``,
    with a short backoff for objects the SuperNode is still receiving
    (:data:`PULL_BACKOFF_S`).
    """
    from flwr.app import Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node  # pylint: disable=E0611
    from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
        PullAppMessagesRequest,
        PullTaskInputRequest,
    )
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context = context_from_proto(res.context)
    run = run_from_proto(res.run)
    fab = fab_from_proto(res.fab)
    msgs = client.PullMessages(PullAppMessagesRequest())
    if not msgs.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    tree = msgs.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree, make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(client.ConfirmMessageReceived, node,
                                                  context.run_id),
        return_type=Message, initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


def _load_client_app(run: Any, fab: Any) -> Any:
    """The bundle's ClientApp: installed under ``$FLWR_HOME/apps`` once, imported once."""
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.config import get_project_dir

    app_dir = get_project_dir(run.fab_id, run.fab_version, fab.hash_str)
    if not (app_dir / "pyproject.toml").is_file():
        install_from_fab(fab.content, skip_prompt=True)
    load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    return load(run.fab_id, run.fab_version, fab.hash_str)


def run_task(address: str, token: str) -> str:
    """Run one claimed task (one message) in this process, like ``flwr-clientapp`` does.

    Args:
        address: ``HOST:PORT`` of the SuperNode's Runtime API.
        token: The task's token from ``AcquireTask``.

    Returns:
        Flower's sub-status of the task (``completed`` or ``failed``).
    """
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http

    client = _client(address, _COMPONENT_APP, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    message = reply = context = None
    sub_status, details = SubStatus.FAILED, "ClientApp task failed due to unknown reason"
    stopping = False  # SIGTERM/SIGINT or the SuperNode gone: push nothing, just exit
    try:
        heartbeat.start()
        t0 = time.perf_counter()
        message, context, run, fab = pull_task_input(client)
        t1 = time.perf_counter()
        client_app = _load_client_app(run, fab)
        reply = client_app(message=message, context=context)
        logger.info("warm ClientApp: %s message pulled in %.2f s, handled in %.2f s",
                    message.metadata.message_type, t1 - t0, time.perf_counter() - t1)
        sub_status, details = SubStatus.COMPLETED, ""
    except Exception as err:  # the same error reply flwr-clientapp sends
        code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
        reason = f"{type(err)}:<'{err}'>"
        if isinstance(err, LoadClientAppError):
            code = ErrorCode.LOAD_CLIENT_APP_EXCEPTION
            reason = "An exception was raised when attempting to load `ClientApp`"
        logger.exception("warm ClientApp: the ClientApp raised an exception")
        details = reason
        if message is not None:
            reply = Message(Error(code=code, reason=reason), reply_to=message)
    except BaseException:
        stopping = True
        raise
    finally:
        if not stopping:
            _push_outcome(client, heartbeat, reply, context, sub_status, details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    return str(sub_status)


def _push_outcome(client: Any, heartbeat: Any, reply: Any, context: Any, sub_status: str,
                  details: str) -> None:
    """Push the reply (if any), stop the task's heartbeat, push its status and context.

    The heartbeat stops before the task's status is pushed: a heartbeat for a finished
    task is refused, and Flower's heartbeat then raises SIGINT in this process (what
    stops a one-task ``flwr-clientapp`` when its run is stopped).
    """
    from flwr.common.constant import SubStatus
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    try:
        if reply is not None and context is not None:
            push_message(client, reply, context)
    except Exception:  # noqa: BLE001 - the task then fails on the SuperNode's side
        logger.exception("warm ClientApp: could not push the reply")
        sub_status, details = SubStatus.FAILED, "could not push the reply"
    if heartbeat.is_running:
        heartbeat.stop()
    push_task_output(client=client, context=context, sub_status=sub_status, details=details)


def serve(address: str, *, poll_s: float = DEFAULT_POLL_S, parent_pid: int | None = None,
          max_tasks: int | None = None) -> int:
    """Claim and run the SuperNode's ClientApp tasks one at a time, until stopped.

    Args:
        address: ``HOST:PORT`` of the SuperNode's Runtime API.
        poll_s: Seconds between two claims when there is no task.
        parent_pid: The SuperNode's pid: exit when it is gone.
        max_tasks: Stop after this many tasks (tests); ``None``: never.

    Returns:
        How many tasks ran.
    """
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=E0611
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.constant import TaskType

    if parent_pid is not None:
        # Flower's monitor raises SIGINT here when the SuperNode is gone. A process started
        # from a background shell job inherits SIGINT ignored, and Python then installs no
        # handler, so the signal would be lost and this process would outlive its node.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        start_parent_process_monitor(parent_pid)  # SIGINT to this process when it is gone
    client = _client(address, _COMPONENT_EXECUTOR)
    done = 0
    try:
        while max_tasks is None or done < max_tasks:
            try:
                res = client.AcquireTask(AcquireTaskRequest(
                    supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]))
            except Exception as err:  # noqa: BLE001 - e.g. the SuperNode restarting
                logger.warning("warm ClientApp: no task from %s (%s)", address, err)
                time.sleep(1.0)
                continue
            if res.HasField("task") and res.token:
                t0 = time.perf_counter()
                status = run_task(address, res.token)
                done += 1
                logger.info("warm ClientApp: task %s of run %s %s in %.2f s",
                            res.task.task_id, res.task.run_id, status,
                            time.perf_counter() - t0)
                continue
            time.sleep(poll_s)
    finally:
        client.close()
    return done


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m zk0cli.flower.warm_clientapp``."""
    p = argparse.ArgumentParser(prog="python -m zk0cli.flower.warm_clientapp",
                                description="Run every ClientApp task of one SuperNode "
                                "(started with --isolation process) in this process.")
    p.add_argument("--runtime-api-address", required=True,
                   help="HOST:PORT of the SuperNode's Runtime API (its --port).")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="Exit when this process (the SuperNode) is gone.")
    p.add_argument("--poll-s", type=float, default=DEFAULT_POLL_S,
                   help=f"Seconds between claims when idle (default {DEFAULT_POLL_S}).")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Runtime API call
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM: clean exit
    try:
        serve(args.runtime_api_address, poll_s=args.poll_s, parent_pid=args.parent_pid)
    except KeyboardInterrupt:  # SIGTERM/SIGINT, its SuperNode gone, or a stopped run
        logger.info("warm ClientApp: stopping (interrupted)")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
