"""FLIP's backend calling flip-authz: a check, a write, and a read-your-writes check.

    AUTHZ_ADDRESS=localhost:50051 AUTHZ_SERVICE_TOKEN=... ADMIN_ACCESS_TOKEN=... USER_ID=<a Cognito sub> \
        python3 example.py

Prints one JSON line with what each call answered; exits 1 if flip-authz could not be asked.
"""

import json
import os
import sys

import grpc

from flip_authz import AuthzClient


def main() -> int:
    user = os.environ["USER_ID"]
    with AuthzClient(os.environ["AUTHZ_ADDRESS"], token=os.environ.get("AUTHZ_SERVICE_TOKEN")) as authz:
        try:
            # A check, as an API route guard makes it with the backend's service token.
            before = authz.check_permission(user_id=user, permission="CAN_CREATE_PROJECTS")
            # A write on behalf of the signed-in admin: their access token, so they are the audited actor.
            written = authz.assign_role(user_id=user, role="Researcher", token=os.environ["ADMIN_ACCESS_TOKEN"])
            # Read-your-writes: at_least_as_fresh = written_at, so the check reflects the write on whichever
            # replica or sidecar answers it.
            after = authz.check_permission(
                user_id=user, permission="CAN_CREATE_PROJECTS", at_least_as_fresh=written.written_at
            )
        except grpc.RpcError as error:
            print(json.dumps({"error": error.code().name, "details": error.details()}))
            return 1
        # A service token may read but not write: flip-authz says so, and the backend sees why.
        try:
            authz.revoke_role(user_id=user, role="Researcher")
            refused = None
        except grpc.RpcError as error:
            refused = {"code": error.code().name, "details": error.details()}
    print(
        json.dumps(
            {
                "before": {"allowed": before.allowed, "checked_at": before.checked_at},
                "written": {"changed": written.changed, "roles": list(written.roles), "written_at": written.written_at},
                "after": {
                    "allowed": after.allowed,
                    "granted_by": list(after.granted_by),
                    "checked_at": after.checked_at,
                },
                "refused": refused,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
