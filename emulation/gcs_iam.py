"""IAM for gcp-storage-emulator: a reverse proxy on 127.0.0.1 that authorises every request as GCS would.

The emulator has no IAM. This proxy stands in front of it and, per request:
1. authenticates the bearer token (issued by the local token endpoint for a key the mocks minted) to a member;
2. maps the JSON/XML API request to the IAM permission(s) GCS checks, the ``resource.name`` each is checked
   on (``projects/_/buckets/B`` or ``projects/_/buckets/B/objects/NAME``) and, for listings, the
   ``storage.googleapis.com/objectListPrefix`` attribute;
3. allows it only if a binding the stack declared (BucketIAMMember, as the mocks saw it) gives the member a
   role containing that permission and its IAM condition, evaluated by Google's CEL runtime
   (cel-expr-python), is true; otherwise answers 403 in GCS's JSON error format. Unmapped requests are denied.

What it does not model: project-level and inherited bindings (there are none in this stack), deny policies,
VPC Service Controls, object ACLs (the bucket uses uniform access) and the CEL functions IAM adds beyond
``api.getAttribute`` (``resource.name.extract``, ``request.time`` arithmetic helpers).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesParser
from typing import Any

from emulation.proxy import ForwardingHandler, serve, upstream_of

# Storage permissions of the predefined roles, from https://cloud.google.com/iam/docs/roles-permissions/storage
# (read 2026-11). Only storage.* permissions are listed: no storage request checks the others a role holds
# (resourcemanager.projects.get, orgpolicy.policy.get, ...).
_OBJECT_READ = ("storage.objects.get", "storage.objects.list", "storage.folders.get", "storage.folders.list")
_MANAGED_FOLDER_READ = ("storage.managedFolders.get", "storage.managedFolders.list")
_MULTIPART = (
    "storage.multipartUploads.abort",
    "storage.multipartUploads.create",
    "storage.multipartUploads.list",
    "storage.multipartUploads.listParts",
)
_OBJECT_USER = (
    *_OBJECT_READ,
    *_MANAGED_FOLDER_READ,
    *_MULTIPART,
    "storage.folders.create",
    "storage.folders.delete",
    "storage.folders.rename",
    "storage.managedFolders.create",
    "storage.managedFolders.delete",
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.restore",
    "storage.objects.update",
)
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "roles/storage.objectViewer": frozenset((*_OBJECT_READ, *_MANAGED_FOLDER_READ)),
    "roles/storage.objectCreator": frozenset(
        (*_MULTIPART, "storage.folders.create", "storage.managedFolders.create", "storage.objects.create")
    ),
    "roles/storage.objectUser": frozenset(_OBJECT_USER),
    "roles/storage.objectAdmin": frozenset(
        (
            *_OBJECT_USER,
            "storage.managedFolders.getIamPolicy",
            "storage.managedFolders.setIamPolicy",
            "storage.objects.getIamPolicy",
            "storage.objects.setIamPolicy",
            "storage.objects.move",
            "storage.objects.overrideUnlockedRetention",
            "storage.objects.setRetention",
        )
    ),
    "roles/storage.bucketViewer": frozenset(
        (
            "storage.buckets.get",
            "storage.buckets.list",
            "storage.buckets.listEffectiveTags",
            "storage.buckets.listTagBindings",
        )
    ),
    "roles/storage.legacyBucketReader": frozenset(("storage.buckets.get", "storage.objects.list")),
    "roles/storage.legacyBucketWriter": frozenset(
        (
            *_MULTIPART,
            "storage.buckets.get",
            "storage.objects.list",
            "storage.objects.create",
            "storage.objects.delete",
            "storage.objects.restore",
        )
    ),
    "roles/storage.legacyObjectReader": frozenset(("storage.objects.get",)),
    "roles/storage.legacyObjectOwner": frozenset(
        (
            "storage.objects.get",
            "storage.objects.update",
            "storage.objects.getIamPolicy",
            "storage.objects.setIamPolicy",
        )
    ),
}
ADMIN_ROLES = frozenset({"roles/storage.admin"})  # every storage.* permission
LIST_PREFIX_ATTRIBUTE = "storage.googleapis.com/objectListPrefix"


@dataclass(frozen=True)
class Check:
    """One permission GCS checks for a request, on one resource."""

    permission: str
    bucket: str
    object: str | None = None  # None: checked on the bucket
    list_prefix: str | None = None  # the objectListPrefix attribute (listings only)

    @property
    def resource_name(self) -> str:
        bucket = f"projects/_/buckets/{self.bucket}"
        return bucket if self.object is None else f"{bucket}/objects/{self.object}"


@dataclass(frozen=True)
class Binding:
    bucket: str
    role: str
    member: str
    condition: str | None = None  # a CEL expression


@dataclass(frozen=True)
class Decision:
    method: str
    path: str
    member: str
    checks: tuple[Check, ...]
    allowed: bool
    reason: str


class Unmapped(ValueError):
    """A request this proxy cannot map to IAM permissions; it is denied."""


class ConditionEvaluator:
    """IAM conditions with Google's CEL runtime: ``resource.name/type/service``, ``request.time``,
    ``api.getAttribute(name, default)``."""

    def __init__(self) -> None:
        from cel_expr_python import cel

        def get_attribute(api: Mapping[str, str], name: str, default: str) -> str:
            return api.get(name, default)

        string_map = cel.Type.Map(cel.Type.STRING, cel.Type.STRING)
        self._env = cel.NewEnv(
            variables={
                "resource": string_map,
                "api": string_map,
                "request": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
            },
            functions=[
                cel.FunctionDecl(
                    "getAttribute",
                    [
                        cel.Overload(
                            "api_get_attribute_string",
                            cel.Type.STRING,
                            [string_map, cel.Type.STRING, cel.Type.STRING],
                            is_member=True,
                            impl=get_attribute,
                        )
                    ],
                )
            ],
        )
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def compile(self, expression: str) -> Any:
        """Compile (and type-check) once; a bad expression fails here, as IAM refuses it at setIamPolicy."""
        with self._lock:
            if expression not in self._compiled:
                self._compiled[expression] = self._env.compile(expression)
            return self._compiled[expression]

    def holds(self, expression: str, check: Check) -> bool:
        attributes = {} if check.list_prefix is None else {LIST_PREFIX_ATTRIBUTE: check.list_prefix}
        resource = {
            "name": check.resource_name,
            "type": "storage.googleapis.com/" + ("Bucket" if check.object is None else "Object"),
            "service": "storage.googleapis.com",
        }
        value = self.compile(expression).eval(
            data={"resource": resource, "api": attributes, "request": {"time": datetime.now(timezone.utc)}}
        )
        return value.value() is True


@dataclass
class GcsIamPolicy:
    """The bucket bindings a stack declared, and the decision for a member's checks."""

    bindings: list[Binding] = field(default_factory=list)
    evaluator: ConditionEvaluator = field(default_factory=ConditionEvaluator)

    def add(self, binding: Binding) -> None:
        if binding.condition:
            self.evaluator.compile(binding.condition)
        self.bindings.append(binding)

    def remove(self, binding: Binding) -> None:
        self.bindings.remove(binding)

    def allows(self, member: str, check: Check) -> bool:
        for binding in list(self.bindings):
            if binding.bucket != check.bucket or binding.member != member:
                continue
            permissions = ROLE_PERMISSIONS.get(binding.role, frozenset())
            if not (binding.role in ADMIN_ROLES or check.permission in permissions):
                continue
            if binding.condition is None or self.evaluator.holds(binding.condition, check):
                return True
        return False


_JSON = r"(?:/storage/v1)?"
_BUCKET = r"(?P<bucket>[-.\w]+)"
_OBJECT = r"(?P<object>[^?]+?)"


def _object_name(raw: str) -> str:
    return urllib.parse.unquote(raw)


def _multipart_metadata(content_type: str, body: bytes) -> dict[str, Any]:
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    parts = message.get_payload()
    if not isinstance(parts, list) or not parts:
        raise Unmapped("multipart upload without parts")
    return json.loads(parts[0].get_payload(decode=True) or b"{}")


def required_checks(
    method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
) -> list[Check]:
    """The permissions GCS checks for one request (https://cloud.google.com/storage/docs/json_api/v1 per method).

    Writing to a name that already exists also needs storage.objects.delete; the caller adds that (it needs
    to know whether the object exists).
    """

    def first(name: str) -> str | None:
        return query.get(name, [None])[0]

    if match := re.fullmatch(rf"/upload/storage/v1/b/{_BUCKET}/o", path):
        bucket = match["bucket"]
        upload_type = first("uploadType") or "media"
        if first("upload_id"):
            return []  # a resumable session URI is the capability; it was authorised when it was created
        if upload_type == "multipart":
            name = first("name") or _multipart_metadata(headers.get("Content-Type", ""), body).get("name")
        elif upload_type == "resumable":
            name = first("name") or (json.loads(body or b"{}").get("name"))
        else:
            name = first("name")
        if not name:
            raise Unmapped("upload without an object name")
        return [Check("storage.objects.create", bucket, name)]
    if match := re.fullmatch(rf"/download/storage/v1/b/{_BUCKET}/o/{_OBJECT}", path):
        return [Check("storage.objects.get", match["bucket"], _object_name(match["object"]))]
    if re.fullmatch(rf"{_JSON}/b", path):
        project = first("project") or "_"
        permission = "storage.buckets.create" if method == "POST" else "storage.buckets.list"
        return [Check(permission, f"(project {project})")]  # project-level: no bucket binding grants it
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}", path):
        permission = {"GET": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}.get(method)
        if not permission:
            raise Unmapped(f"{method} on a bucket")
        return [Check(f"storage.buckets.{permission}", match["bucket"])]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/iam", path):
        return [Check("storage.buckets." + ("getIamPolicy" if method == "GET" else "setIamPolicy"), match["bucket"])]
    if re.fullmatch(rf"{_JSON}/b/{_BUCKET}/iam/testPermissions", path):
        return []  # answers what the caller may do; needs no permission
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/(?:acl|defaultObjectAcl)(?:/.*)?", path):
        return [Check("storage.buckets." + ("getIamPolicy" if method == "GET" else "setIamPolicy"), match["bucket"])]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/o", path):
        if method == "GET":
            return [Check("storage.objects.list", match["bucket"], list_prefix=first("prefix") or "")]
        raise Unmapped(f"{method} on the object collection")
    if match := re.fullmatch(
        rf"{_JSON}/b/{_BUCKET}/o/{_OBJECT}/(?:copyTo|rewriteTo)/b/(?P<dest_bucket>[-.\w]+)/o/(?P<dest>[^?]+)", path
    ):
        return [
            Check("storage.objects.get", match["bucket"], _object_name(match["object"])),
            Check("storage.objects.create", match["dest_bucket"], _object_name(match["dest"])),
        ]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/o/{_OBJECT}/compose", path):
        sources = json.loads(body or b"{}").get("sourceObjects", [])
        bucket = match["bucket"]
        return [
            Check("storage.objects.create", bucket, _object_name(match["object"])),
            *(Check("storage.objects.get", bucket, source["name"]) for source in sources),
        ]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/o/{_OBJECT}/acl(?:/.*)?", path):
        permission = "getIamPolicy" if method == "GET" else "setIamPolicy"
        return [Check(f"storage.objects.{permission}", match["bucket"], _object_name(match["object"]))]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/o/{_OBJECT}/restore", path):
        name = _object_name(match["object"])
        return [Check("storage.objects.restore", match["bucket"], name)]
    if match := re.fullmatch(rf"{_JSON}/b/{_BUCKET}/o/{_OBJECT}", path):
        permission = {"GET": "get", "HEAD": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}.get(method)
        if not permission:
            raise Unmapped(f"{method} on an object")
        return [Check(f"storage.objects.{permission}", match["bucket"], _object_name(match["object"]))]
    if match := re.fullmatch(rf"/{_BUCKET}/{_OBJECT}", path):  # XML API
        permission = {"GET": "get", "HEAD": "get", "PUT": "create", "DELETE": "delete"}.get(method)
        if not permission:
            raise Unmapped(f"XML API {method}")
        return [Check(f"storage.objects.{permission}", match["bucket"], _object_name(match["object"]))]
    raise Unmapped(f"{method} {path}")


def _batch_parts(content_type: str, body: bytes) -> list[tuple[str, str, dict[str, str], bytes]]:
    """The requests inside a JSON API batch (multipart/mixed of application/http parts)."""
    message = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    requests = []
    for part in message.get_payload() or []:
        raw = part.get_payload(decode=True) or b""
        head, _, inner_body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        request_line, *header_lines = head.decode().splitlines()
        method, target = request_line.split()[:2]
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        requests.append((method, target, headers, inner_body))
    return requests


class _IamHandler(ForwardingHandler):
    proxy: GcsIamProxy

    def authorise(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        member = self.proxy.member_for(self.headers.get("Authorization", ""))
        if member is None:
            return _error(401, "Invalid Credentials: no bearer token the local token endpoint issued")
        try:
            checks = self.proxy.checks_for(self.command, parsed.path, query, self.headers, body)  # case-insensitive
        except Unmapped as err:
            self.proxy.record(Decision(self.command, self.path, member, (), False, f"unmapped: {err}"))
            return _error(403, f"{member}: request not mapped to an IAM permission, denied ({err})")
        denied = [check for check in checks if not self.proxy.policy.allows(member, check)]
        reason = "; ".join(f"{c.permission} on {c.resource_name}" for c in denied) or "allowed"
        self.proxy.record(Decision(self.command, self.path, member, tuple(checks), not denied, reason))
        if not denied:
            return None
        first = denied[0]
        return _error(
            403,
            f"{member} does not have {first.permission} access to the Google Cloud Storage "
            f"{'bucket' if first.object is None else 'object'}. Permission '{first.permission}' denied on "
            f"resource {first.resource_name} (or it may not exist).",
        )

    def forwarded(self, status: int, headers: list[tuple[str, str]]) -> None:
        location = dict(headers).get("Location")
        if self.path.startswith("/upload/") and location:
            upload_id = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query).get("upload_id", [None])[0]
            if upload_id:
                self.proxy.sessions.add(upload_id)


def _error(code: int, message: str) -> tuple[int, dict[str, str], bytes]:
    """GCS's JSON error body."""
    reason = {401: "required", 403: "forbidden"}[code]
    error = {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}
    return code, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps({"error": error}).encode()


@dataclass
class GcsIamProxy:
    """The enforcing proxy's state: who holds which token, the declared bindings, and every decision."""

    upstream_host: str
    upstream_port: int
    tokens: Mapping[str, str]  # bearer token -> member, filled by the token endpoint
    policy: GcsIamPolicy = field(default_factory=GcsIamPolicy)
    decisions: list[Decision] = field(default_factory=list)
    sessions: set[str] = field(default_factory=set)  # resumable upload ids created through the proxy
    endpoint: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def member_for(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        return self.tokens.get(token) if scheme.lower() == "bearer" else None

    def record(self, decision: Decision) -> None:
        with self._lock:
            self.decisions.append(decision)

    def checks_for(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes
    ) -> list[Check]:
        if path == "/batch/storage/v1":
            checks = []
            for inner_method, target, inner_headers, inner_body in _batch_parts(headers.get("Content-Type", ""), body):
                inner = urllib.parse.urlsplit(target)
                inner_query = urllib.parse.parse_qs(inner.query)
                checks += self.checks_for(inner_method, inner.path, inner_query, inner_headers, inner_body)
            return checks  # the whole batch is refused when one part is denied (GCS would answer per part)
        if path.startswith("/upload/") and query.get("upload_id", [""])[0]:
            if query["upload_id"][0] not in self.sessions:
                raise Unmapped("unknown resumable upload session")
            return []
        checks = required_checks(method, path, query, headers, body)
        # Overwriting an existing object also needs storage.objects.delete on it.
        for check in list(checks):
            if check.permission == "storage.objects.create" and check.object and self._exists(check):
                checks.append(Check("storage.objects.delete", check.bucket, check.object))
        return checks

    def _exists(self, check: Check) -> bool:
        connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=30)
        try:
            name = urllib.parse.quote(check.object or "", safe="")
            connection.request("GET", f"/storage/v1/b/{check.bucket}/o/{name}")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    def counts(self) -> tuple[int, int]:
        """(allowed, denied) decisions so far."""
        with self._lock:
            allowed = sum(decision.allowed for decision in self.decisions)
            return allowed, len(self.decisions) - allowed


@contextlib.contextmanager
def gcs_iam_proxy(upstream: str, tokens: Mapping[str, str]) -> Iterator[GcsIamProxy]:
    """Serve the enforcing proxy for the emulator at ``upstream`` (http://127.0.0.1:PORT) on a free port."""
    host, port = upstream_of(upstream)
    proxy = GcsIamProxy(host, port, tokens)
    handler = type("GcsIamHandler", (_IamHandler,), {"proxy": proxy, "upstream": (host, port)})
    with serve(handler, "gcs-iam-proxy") as endpoint:
        proxy.endpoint = endpoint
        yield proxy
