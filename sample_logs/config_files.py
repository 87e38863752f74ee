"""The inventory (``meshlens.toml``) and allowed-caller policy (``policy.toml``) of the scenario.

Policy file format (read by the metrics engineer's ``meshlens policy check``)::

    # Each [[allow]] rule names a callee service, the env it applies to (omit env for every
    # env) and the only callers allowed to call it there. A request to that service in that
    # env from any other caller, an unresolved ('unknown') caller included, breaks the policy.
    # Requests the network itself denied (403 with authDeniedReason) are reported as denied,
    # not as violations. Services without a rule may be called by anyone.
    [[allow]]
    service = "PaymentService"
    env = "prod"
    callers = ["OrderService", "CheckoutService"]
"""

from __future__ import annotations

import json
from pathlib import Path

from sample_logs.topology import ENVS, Service

POLICY_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("PaymentService", "prod", ("OrderService", "CheckoutService")),
    ("PaymentGatewayAdapter", "prod", ("PaymentService",)),
)

POLICY_HEADER = """\
# Allowed-caller policy of the meshlens demo scenario.
# Each [[allow]] rule names a callee service, the env it applies to (omit env for every env)
# and the only callers allowed to call it there. A request to that service in that env from
# any other caller, an unresolved ('unknown') caller included, breaks the policy. Requests the
# network itself denied (403 with authDeniedReason) are reported as denied, not as violations.
# Services without a rule may be called by anyone.
"""


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def inventory_text(svcs: list[Service]) -> str:
    """The scenario's inventory in the documented ``meshlens.toml`` format."""
    lines = ["# Service inventory of the meshlens demo scenario (generated: do not edit).", ""]
    for index, svc in enumerate(svcs):
        lines += _service_block(svc, index)
    for svc in svcs:
        for env in ENVS:
            for version in svc.versions.get(env.name, ()):
                lines += ["[[target_group]]", f"id = {json.dumps(svc.tg_id(env.name, version))}",
                          f"service = {json.dumps(svc.name)}", f"version = {json.dumps(version)}", ""]
    for env in ENVS:
        lines += ["[[env]]", f"name = {json.dumps(env.name)}",
                  f"service_networks = {_toml_list([env.sn_id])}",
                  f"accounts = {_toml_list([env.account])}", ""]
    return "\n".join(lines)


def _service_block(svc: Service, index: int) -> list[str]:
    lines = ["[[service]]", f"name = {json.dumps(svc.name)}"]
    if svc.tier > 0:
        lines.append("hosts = " + _toml_list([f"{svc.kebab}-{svc.svc_id(e.name)[4:]}.*" for e in ENVS]))
        lines.append("ids = " + _toml_list([svc.svc_id(e.name) for e in ENVS]))
    principals = [f"arn:aws:sts::{e.account}:assumed-role/{svc.role_name(e.name)}/*" for e in ENVS]
    if svc.auth == "spiffe":
        principals = [svc.spiffe(e.name) for e in ENVS]
    lines.append("principals = " + _toml_list(principals))
    lines.append("cidrs = " + _toml_list([svc.cidr(e, index) for e in ENVS]))
    return lines + [""]


def policy_text() -> str:
    """The allowed-caller policy in the format documented above."""
    lines = [POLICY_HEADER]
    for service, env, callers in POLICY_RULES:
        lines += ["[[allow]]", f"service = {json.dumps(service)}", f"env = {json.dumps(env)}",
                  f"callers = {_toml_list(list(callers))}", ""]
    return "\n".join(lines)


def write_config(out_dir: Path, svcs: list[Service]) -> None:
    """Write ``meshlens.toml`` and ``policy.toml`` into ``out_dir``."""
    (out_dir / "meshlens.toml").write_text(inventory_text(svcs))
    (out_dir / "policy.toml").write_text(policy_text())
