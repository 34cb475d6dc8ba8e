"""The env contract matches what Airflow itself reads."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from airflow.configuration import conf
from airflow.models.connection import Connection

from xcom_backend import contract


@pytest.mark.parametrize(
    ("section", "key", "name"),
    [
        ("core", "xcom_backend", contract.XCOM_BACKEND_ENV),
        ("common.io", "xcom_objectstorage_path", contract.PATH_ENV),
        ("common.io", "xcom_objectstorage_threshold", contract.THRESHOLD_ENV),
        ("common.io", "xcom_objectstorage_compression", contract.COMPRESSION_ENV),
    ],
)
def test_env_names_are_the_ones_airflow_reads(section: str, key: str, name: str) -> None:
    assert name == conf._env_var_name(section, key)


def test_names_from_the_tutorial_that_airflow_ignores_are_not_used() -> None:
    names = {contract.XCOM_BACKEND_ENV, contract.PATH_ENV, contract.THRESHOLD_ENV, contract.COMPRESSION_ENV}
    assert not any("COMMON.IO" in name or "OBJECTSTORE_" in name for name in names)
    assert contract.COMPRESSION_ENV.endswith("XCOM_OBJECTSTORAGE_COMPRESSION")


def test_env_values_are_what_airflow_conf_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    env = contract.XComEnv(
        cloud="aws",
        conn_id="my_aws_conn",
        bucket="b-1",
        prefix="xcom",
        threshold=1000,
        compression="gzip",
        connection=contract.aws_connection(region="eu-west-1", access_key_id="AKIA1", secret_access_key="s3cr3t/+="),
    ).as_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert conf.get("common.io", "xcom_objectstorage_path") == "s3://my_aws_conn@b-1/xcom"
    assert conf.getint("common.io", "xcom_objectstorage_threshold") == 1000
    assert conf.get("common.io", "xcom_objectstorage_compression") == "gzip"
    assert conf.get("core", "xcom_backend") == contract.BUNDLED_BACKEND


def test_only_gcp_gets_the_gcsfs_switch_and_gcsfs_reads_that_name() -> None:
    import gcsfs

    def env_for(cloud: str) -> dict[str, str]:
        return contract.XComEnv(
            cloud=cloud, conn_id="c", bucket="b", prefix="xcom", threshold=0, connection={"conn_type": "x"}
        ).as_env()

    assert env_for("gcp")[contract.GCSFS_HNS_ENV] == "false"
    assert contract.GCSFS_HNS_ENV not in env_for("aws") and contract.GCSFS_HNS_ENV not in env_for("azure")
    assert f'os.getenv("{contract.GCSFS_HNS_ENV}"' in Path(gcsfs.__file__).read_text()


def test_connection_json_parses_with_airflow() -> None:
    env = contract.XComEnv(
        cloud="aws",
        conn_id="my_aws_conn",
        bucket="b-1",
        prefix="xcom",
        threshold=0,
        connection=contract.aws_connection(region="eu-west-1", access_key_id="AKIA1", secret_access_key="a'b\"c"),
    ).as_env()
    assert contract.COMPRESSION_ENV not in env
    parsed = Connection.from_json(env["AIRFLOW_CONN_MY_AWS_CONN"], conn_id="my_aws_conn")
    assert (parsed.conn_type, parsed.login, parsed.password) == ("aws", "AKIA1", "a'b\"c")
    assert parsed.extra_dejson == {"region_name": "eu-west-1"}


def test_role_connection_carries_no_secret() -> None:
    connection = contract.aws_connection(region="us-east-1", role_arn="arn:aws:iam::123456789012:role/x")
    assert "password" not in connection and "login" not in connection
    assert connection["extra"]["role_arn"] == "arn:aws:iam::123456789012:role/x"
    with pytest.raises(contract.ContractError, match="both"):
        contract.aws_connection(region="us-east-1", access_key_id="AKIA1")


@pytest.mark.parametrize("dotted", sorted(contract.BACKEND_CLASSES.values()))
def test_backend_classes_import(dotted: str) -> None:
    module, _, name = dotted.rpartition(".")
    assert hasattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("cloud", "expected"),
    [("aws", "s3://c@b/p/q"), ("gcp", "gs://c@b/p/q"), ("azure", "abfs://c@b/p/q")],
)
def test_path_format(cloud: str, expected: str) -> None:
    assert contract.objectstorage_path(cloud, "c", "b", "p/q") == expected


@pytest.mark.parametrize(
    ("validator", "bad"),
    [
        (contract.validate_prefix, "/xcom"),
        (contract.validate_prefix, "xcom/"),
        (contract.validate_prefix, "a/../b"),
        (contract.validate_prefix, ""),
        (contract.validate_prefix, "a b"),
        (contract.validate_threshold, -2),
        (contract.validate_threshold, True),
        (contract.validate_compression, "zstd-ish"),
        (contract.validate_conn_id, "my-conn"),
        (contract.validate_conn_id, "1conn"),
    ],
)
def test_validators_reject(validator, bad) -> None:
    with pytest.raises(contract.ContractError):
        validator(bad)


@pytest.mark.parametrize("compression", contract.COMPRESSIONS)
def test_every_allowed_codec_is_known_to_fsspec(compression: str) -> None:
    import fsspec.utils

    assert compression in fsspec.utils.compressions.values()


def test_threshold_in_words() -> None:
    assert "metadata database" in contract.describe_threshold(-1)
    assert "every XCom goes" in contract.describe_threshold(0)
    assert "1000 bytes or more" in contract.describe_threshold(1000)


def test_path_parser_is_the_inverse_of_the_path_builder() -> None:
    for cloud in contract.SCHEMES:
        location = contract.parse_objectstorage_path(contract.objectstorage_path(cloud, "c_1", "b-1", "p/q"))
        assert (location.scheme, location.conn_id, location.bucket, location.prefix) == (
            contract.SCHEMES[cloud],
            "c_1",
            "b-1",
            "p/q",
        )
        assert location.path == "b-1/p/q"
        assert location.scheme in contract.STORE_SCHEMES


@pytest.mark.parametrize("bad", ["bucket/xcom", "://bucket/xcom", "s3://@bucket/xcom", "s3://conn@/xcom", "s3:///x"])
def test_path_parser_rejects_paths_without_scheme_or_bucket(bad: str) -> None:
    with pytest.raises(contract.ContractError):
        contract.parse_objectstorage_path(bad)


def test_every_store_scheme_names_a_provider_filesystem_module_that_imports() -> None:
    for scheme in contract.STORE_SCHEMES:
        module = importlib.import_module(contract.STORE_SCHEMES[scheme].fs_module)
        assert scheme in module.schemes and callable(module.get_fs)
