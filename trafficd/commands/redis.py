"""`trafficd redis acl --policy FILE`: the Redis ACL users of a policy, one role each, as ACL file lines.

    {svc}-agent-{region}   one per region: writes only that region's statistics keys ({p}:{svc}:{region}:*),
                           with the few commands the sample sink sends (its batch script, EVALSHA/EVAL, and
                           the commands that script calls: TYPE, HGET, BITFIELD, HSET, HINCRBY, LPUSH, ...)
    {svc}-controller       reads every key of the service; writes only its state and lease ({p}:{svc}:controller:*)
                           and the audit stream ({p}:{svc}:audit)
    {svc}-oncall           reads every key of the service; writes only the overrides ({p}:{svc}:override:*)

So an agent host that is broken into can neither write another region's samples nor the lease, the controller
state or the overrides. The lines carry no password: each user starts with none (it cannot log in) until one is
given, in the ACL file (`#<sha256 hex of the password>`) or with `ACL SETUSER <user> ><password>`. Every process
then sets `redis.acl_users: true` and holds its role's password in `redis.password_env`/`password_file`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from trafficd import keys
from trafficd.cli import add_policy_argument, open_policy

if TYPE_CHECKING:  # `redis --help` imports no schema
    from trafficd.policy.schema import Policy

_CONNECT = "+@connection"  # AUTH, HELLO, PING, CLIENT SETINFO (CLIENT KILL is taken away by _NEVER)
_NEVER = "-@admin -@dangerous"
# What SampleSink sends: its script (EVALSHA, EVAL when not cached) per region per flush and per heartbeat, and
# every command the script calls (Redis checks each against this user's ACL); TIME to judge its clock. MULTI, EXEC
# and DISCARD are for `trafficd check`, which queues these commands as this user in a MULTI it discards.
_AGENT_COMMANDS = (
    "+multi +exec +discard +evalsha +eval +type +hexists +hget +bitfield +hset +hincrby +expire +lpush +ltrim"
    " +time +ping"
)
# Readers and writers of whole values; EVAL for the lease scripts (which name their keys, so ACL checks them).
_SERVICE_COMMANDS = "+@read +@write +@transaction +eval +evalsha +time"


def acl_rules(policy: Policy) -> dict[str, list[str]]:
    """User name → its ACL rules (after `reset on`), for every role of the policy."""
    p, svc = policy.redis.key_prefix, policy.service
    service_keys = keys.service_base(p, svc)
    stats_read = f"%R~{p}:{svc}:*"
    rules: dict[str, list[str]] = {}
    for region in policy.region_names:
        own = f"~{keys.region_base(p, svc, region)}:*"
        rules[keys.acl_username(svc, "agent", region)] = [
            own,
            "resetchannels",
            "-@all",
            _CONNECT,
            _AGENT_COMMANDS,
            _NEVER,
        ]
    shared = [stats_read, f"%R~{service_keys}:*", "resetchannels", "-@all", _CONNECT, _SERVICE_COMMANDS, _NEVER]
    controller_writes = [f"~{service_keys}:controller:*", f"~{keys.audit_key(p, svc)}"]
    rules[keys.acl_username(svc, "controller")] = [*controller_writes, *shared]
    rules[keys.acl_username(svc, "oncall")] = [f"~{service_keys}:override:*", *shared]
    return rules


def acl_lines(policy: Policy) -> list[str]:
    """`user <name> reset on <rules>` lines for an ACL file (no password: add `#<sha256>` or use ACL SETUSER)."""
    return [f"user {name} reset on {' '.join(rules)}" for name, rules in acl_rules(policy).items()]


def _acl(args: argparse.Namespace) -> int:
    policy = open_policy(args)  # bad policy: every problem printed, exit 78 (trafficd.cli)
    print(f"# Redis ACL users of service {policy.service} (trafficd redis acl --policy {args.policy})")
    print("# No passwords here: append '#<sha256 hex of the password>' to each line, or run")
    print("#   ACL SETUSER <user> '><password>'   and set redis.acl_users: true in the policy.")
    print("# Then turn the shared default user off:   user default off")
    for line in acl_lines(policy):
        print(line)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("redis", help="Redis set-up for a policy (ACL users)")
    redis_sub = p.add_subparsers(dest="redis_command", metavar="SUBCOMMAND")
    redis_sub.required = True
    acl = redis_sub.add_parser("acl", help="print the ACL users (one per region's agents, controller, on-call)")
    add_policy_argument(acl)
    acl.set_defaults(func=_acl)
