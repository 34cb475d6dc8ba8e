"""IAM policy Conditions for moto: a proxy that evaluates them where moto does not, then lets moto decide the rest.

moto enforces actions and resource ARNs but ignores every ``Condition``: a ListBucket limited by
``s3:prefix`` lists any prefix there, and a KMS grant limited by ``kms:ViaService`` can be used directly.
This proxy, in front of a moto server, takes the requests whose grant depends on a condition in our policy,
evaluates the signing user's policies (read from moto's IAM, as moto would) with those conditions, and
answers AccessDenied when no Allow statement holds; everything else, and every request it allows, goes on
to moto unchanged, which still checks actions and resources.

Evaluated here: S3 ListObjects/ListObjectsV2 (``s3:ListBucket`` with ``s3:prefix``, absent when the request
has no prefix, as on AWS) and direct KMS calls (``kms:<Operation>``, where ``kms:ViaService`` is absent and
``kms:EncryptionContext:<key>`` comes from the request). Operators: String(Not)Equals, String(Not)Like,
Bool, Arn(Not)Like/Equals, with ...IfExists. Not evaluated: keys of assumed-role sessions (moto's IAM API
cannot map them to a role; such requests go to moto as before), and S3 calling KMS on the caller's behalf
(moto's S3 never calls KMS, so the ViaService path that AWS allows is not exercised).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botocore.exceptions import ClientError

from emulation.proxy import ForwardingHandler, serve, upstream_of

_CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
# Bucket subresources whose GET is not a listing (GetBucketLocation, GetBucketPolicy, ...).
_NOT_LISTING = {"location", "policy", "acl", "tagging", "versioning", "lifecycle", "encryption", "cors", "website",
                "logging", "notification", "replication", "uploads", "versions", "publicAccessBlock",
                "ownershipControls", "object-lock", "accelerate", "requestPayment", "analytics", "metrics",
                "inventory", "intelligent-tiering"}  # fmt: skip


@dataclass(frozen=True)
class Request:
    """One request as IAM evaluates it."""

    action: str
    resource: str
    context: Mapping[str, Any] = field(default_factory=dict)  # condition keys present in the request


def _values(value: Any) -> list[str]:
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in (value if isinstance(value, list) else [value])]


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists or "Not" in base  # absent key: no match, so only negated operators hold
    actual = _values(context[key])
    patterns = _values(expected)
    if base in ("StringEquals", "ArnEquals", "Bool"):
        matched = any(a == p for a in actual for p in patterns)
    elif base in ("StringLike", "ArnLike"):
        matched = any(fnmatch.fnmatchcase(a, p) for a in actual for p in patterns)
    elif base in ("StringNotEquals", "ArnNotEquals"):
        return all(a != p for a in actual for p in patterns)
    elif base in ("StringNotLike", "ArnNotLike"):
        return not any(fnmatch.fnmatchcase(a, p) for a in actual for p in patterns)
    else:
        raise ValueError(f"condition operator {operator} is not evaluated here")
    return matched


def _matches(patterns: Any, value: str, *, ignore_case: bool = False) -> bool:
    if ignore_case:
        return any(fnmatch.fnmatchcase(value.lower(), p.lower()) for p in _values(patterns))
    return any(fnmatch.fnmatchcase(value, p) for p in _values(patterns))


def statement_applies(statement: Mapping[str, Any], request: Request) -> bool:
    """Action, resource and every condition of the statement match the request."""
    if not _matches(statement.get("Action", []), request.action, ignore_case=True):
        return False
    if not _matches(statement.get("Resource", []), request.resource):
        return False
    return all(
        _condition_holds(operator, key, expected, request.context)
        for operator, keys in (statement.get("Condition") or {}).items()
        for key, expected in keys.items()
    )


def allowed(policies: list[Mapping[str, Any]], request: Request) -> bool:
    """IAM's identity-policy logic: an explicit Deny wins, then any Allow, else the implicit deny."""
    statements = [s for policy in policies for s in _values_list(policy.get("Statement", []))]
    if any(s.get("Effect") == "Deny" and statement_applies(s, request) for s in statements):
        return False
    return any(s.get("Effect") == "Allow" and statement_applies(s, request) for s in statements)


def _values_list(statements: Any) -> list[Mapping[str, Any]]:
    return statements if isinstance(statements, list) else [statements]


def conditioned_request(
    method: str, path: str, query: Mapping[str, list[str]], headers: Mapping[str, str], body: bytes, region: str
) -> Request | None:
    """The IAM request for S3 listings and KMS calls; None for everything this proxy leaves to moto."""
    target = headers.get("X-Amz-Target", "")
    if target.startswith("TrentService."):
        payload = json.loads(body or b"{}")
        key = str(payload.get("KeyId", ""))
        resource = key if key.startswith("arn:") or not key else f"arn:aws:kms:{region}:*:key/{key}"
        resource = resource or "*"  # CreateKey, ListKeys, ...: no key resource
        context = {f"kms:EncryptionContext:{k}": v for k, v in (payload.get("EncryptionContext") or {}).items()}
        return Request(f"kms:{target.split('.', 1)[1]}", resource, context)
    bucket = path.strip("/")
    if method != "GET" or not bucket or "/" in bucket or _NOT_LISTING & set(query):
        return None
    context = {"s3:prefix": query["prefix"][0]} if "prefix" in query else {}
    return Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", context)


@dataclass
class ConditionProxy:
    """State of the proxy: how to read a user's policies from moto, and every decision it made."""

    iam: Any  # a boto3 IAM client with admin rights on the moto server behind the proxy
    kms: Any
    decisions: list[tuple[str, Request, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def policies_of(self, access_key_id: str) -> list[Mapping[str, Any]] | None:
        """The identity policies of the IAM user owning the key; None when moto cannot say (role sessions)."""
        try:
            user = self.iam.get_access_key_last_used(AccessKeyId=access_key_id)["UserName"]
        except (ClientError, KeyError):
            return None
        documents = []
        for attached in self.iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]:
            policy = self.iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
            version = self.iam.get_policy_version(PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"])
            documents.append(_document(version["PolicyVersion"]["Document"]))
        for name in self.iam.list_user_policies(UserName=user)["PolicyNames"]:
            documents.append(_document(self.iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"]))
        return documents

    def key_arn(self, request: Request) -> Request:
        """A KMS key id or alias resolved to its ARN, as IAM matches Resource against it."""
        if not request.action.startswith("kms:") or ":*:key/" not in request.resource:
            return request
        key_id = request.resource.rsplit("/", 1)[1]
        try:
            return replace(request, resource=self.kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"])
        except ClientError:
            return request

    def record(self, key: str, request: Request, verdict: bool) -> None:
        with self._lock:
            self.decisions.append((key, request, verdict))


def _document(document: Any) -> Mapping[str, Any]:
    return json.loads(urllib.parse.unquote(document)) if isinstance(document, str) else document


class _ConditionHandler(ForwardingHandler):
    proxy: ConditionProxy

    def authorise(self, body: bytes) -> tuple[int, dict[str, str], bytes] | None:
        credential = _CREDENTIAL_RE.search(self.headers.get("Authorization", ""))
        if not credential:
            return None  # unsigned (moto refuses it) or presigned: moto decides
        access_key_id, region = credential.group(1), credential.group(2)
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
        request = conditioned_request(self.command, parsed.path, query, dict(self.headers), body, region)
        if request is None:
            return None
        policies = self.proxy.policies_of(access_key_id)
        if policies is None:
            return None
        request = self.proxy.key_arn(request)
        verdict = allowed(policies, request)
        self.proxy.record(access_key_id, request, verdict)
        if verdict:
            return None
        message = f"not authorized to perform: {request.action} on resource: {request.resource} (policy conditions)"
        if request.action.startswith("kms:"):
            body = json.dumps({"__type": "AccessDeniedException", "message": message}).encode()
            return 400, {"Content-Type": "application/x-amz-json-1.1"}, body
        xml = f"<Error><Code>AccessDenied</Code><Message>{message}</Message></Error>"
        return 403, {"Content-Type": "application/xml"}, b"<?xml version='1.0' encoding='UTF-8'?>" + xml.encode()


@contextlib.contextmanager
def condition_proxy(upstream: str, iam: Any, kms: Any) -> Iterator[tuple[str, ConditionProxy]]:
    """Serve the condition-evaluating proxy for the moto server at ``upstream``; yields (endpoint, state)."""
    state = ConditionProxy(iam, kms)
    handler = type("ConditionHandler", (_ConditionHandler,), {"proxy": state, "upstream": upstream_of(upstream)})
    with serve(handler, "s3-condition-proxy") as endpoint:
        yield endpoint, state
