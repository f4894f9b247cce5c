"""MLflow failures exactly as MLflow raises them, built with MLflow's own wrapping code and real drivers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.db.utils import _get_managed_session_maker
from sqlalchemy.orm import sessionmaker


def mlflow_error(message: str, code: str) -> MlflowException:
    """An MlflowException as MLflow raises it (codes are proto enum values; a string would be ignored)."""
    return MlflowException(message, error_code=databricks_pb2.ErrorCode.Value(code))


def as_sql_store_raises(error: Exception) -> MlflowException:
    """``error`` as MLflow's SQL store raises it: its managed session wraps whatever its block raised."""
    managed = _get_managed_session_maker(sessionmaker(bind=sqlalchemy.create_engine("sqlite://")), "sqlite")
    with pytest.raises(MlflowException) as info, managed(read_only=False):
        raise error
    return info.value


def sqlite_busy(tmp_path: Path) -> sqlalchemy.exc.OperationalError:
    """The real error of a second SQLite writer while another holds the database (SQLITE_BUSY)."""
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'busy.db'}", connect_args={"timeout": 0})
    try:
        with pytest.raises(sqlalchemy.exc.OperationalError) as info, engine.connect() as conn:
            conn.execute(sqlalchemy.text("insert into t values (1)"))
    finally:
        holder.close()
        engine.dispose()
    return info.value


def sqlite_error(sql: str) -> sqlalchemy.exc.DBAPIError:
    """The real SQLAlchemy error of ``sql`` on an in-memory database with one table ``t`` (x primary key)."""
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("create table t (x primary key)"))
        conn.execute(sqlalchemy.text("insert into t values (1)"))
        with pytest.raises(sqlalchemy.exc.DBAPIError) as info:
            conn.execute(sqlalchemy.text(sql))
    return info.value


def wrapped(orig: Exception, cls: type[sqlalchemy.exc.DBAPIError] = sqlalchemy.exc.OperationalError) -> Exception:
    """A driver exception as SQLAlchemy wraps it."""
    return cls("UPDATE registered_models ...", {}, orig)


def raised_during(context: BaseException, error: MlflowException) -> MlflowException:
    """``error`` raised while handling ``context``, as MLflow's REST client raises it (no ``from``)."""
    try:
        try:
            raise context
        except BaseException:
            raise error  # noqa: B904 - reproduces MLflow's implicit chaining
    except MlflowException as exc:
        return exc
