"""The one exception type the CLI turns into a one-line message and a non-zero exit, and how to find it
again when Ray wrapped it (a Ray Data task, a Ray Train worker)."""
from __future__ import annotations

import re

USER_ERROR_LINE = re.compile(r"pipeline\.errors\.UserError: (.+)")


class UserError(Exception):
    """Bad input a person can fix: the message names the problem and the fix, on one line."""


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`: its causes, a Ray task error's `cause`, a Ray Train worker group's
    `worker_failures`, or, where Ray kept only the text, the traceback's last UserError line."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if type(current) is UserError:
            return current
        pending.extend([current.__cause__, current.__context__, getattr(current, "cause", None)])
        failures = getattr(current, "worker_failures", None)
        if isinstance(failures, dict):
            pending.extend(failures.values())
    found = USER_ERROR_LINE.findall(str(exc))
    return UserError(found[-1].strip()) if found else None
