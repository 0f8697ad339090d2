"""records partitioned by day; idempotency keys that expire

`message_records` (by `published_at`) and `consumption_records` (by `consumed_at`) become
range-partitioned, one partition per UTC day (`models.partitions`), so that retention drops
whole days. Their primary keys take the partition key: `(id, published_at)` and
`(id, consumed_at)`. The unique `(tenant_id, message_id)` of the records goes: ids are unique
for 24 h (docs/api.md "Idempotency") through `idempotency_keys`, filled here with the keys of
the last 24 h.

The existing rows are copied into the new tables (partitions for every day they cover are
created first), so the upgrade takes time in proportion to the rows: about a minute per ten
million on a small server. The downgrade copies them back; it fails if a message id was
published twice (possible once ids expire), as the old unique constraint cannot hold then.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
from sqlalchemy import text

from models.base import utcnow
from models.partitions import ensure_partitions, utc_day

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

#: table -> (partition key, foreign keys (column, referred table), indexes (name, columns,
#: where)) of the partitioned table.
TABLES = {
    "message_records": ("published_at", [
        ("tenant_id", "tenants"), ("topic_id", "message_topics")], [
        ("ix_message_records_topic_published", "topic_id, published_at", None),
        ("ix_message_records_unhanded", "offset_value, published_at", None),
        ("ix_message_records_tenant_message", "tenant_id, message_id, published_at", None),
        ("ix_message_records_scheduled", "id", "status = 'scheduled'"),
    ]),
    "consumption_records": ("consumed_at", [
        ("tenant_id", "tenants"), ("subscription_id", "message_subscriptions")], [
        ("ix_consumption_records_subscription_consumed", "subscription_id, consumed_at, id",
         None),
        ("ix_consumption_records_message", "tenant_id, message_id", None),
    ]),
}
#: The unpartitioned tables' indexes (besides their primary keys), for the downgrade.
PLAIN_INDEXES = {
    "message_records": [
        ("ix_message_records_topic_published", "topic_id, published_at"),
        ("ix_message_records_unhanded", "offset_value, published_at")],
    "consumption_records": [
        ("ix_consumption_records_subscription_consumed", "subscription_id, consumed_at"),
        ("ix_consumption_records_message", "tenant_id, message_id")],
}


def upgrade() -> None:
    bind = op.get_bind()
    for table, (key, foreign_keys, indexes) in TABLES.items():
        old = f"{table}_unpartitioned"
        _set_aside(table, old, [name for name, _ in PLAIN_INDEXES[table]])
        op.execute(f"ALTER TABLE {old} DROP CONSTRAINT IF EXISTS "
                   "uq_message_records_tenant_id_message_id")
        op.execute(f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS) "
                   f"PARTITION BY RANGE ({key})")
        oldest = bind.scalar(text(f"SELECT min({key}) FROM {old}"))
        now = utcnow()
        ensure_partitions(bind, now, since=utc_day(min(oldest, now)) if oldest else None,
                          tables=[table])
        op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
        op.execute(f"DROP TABLE {old}")
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id, {key})")
        for column, referred in foreign_keys:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column}_{referred} "
                       f"FOREIGN KEY ({column}) REFERENCES {referred} (id) ON DELETE CASCADE")
        for name, columns, where in indexes:
            op.execute(f"CREATE INDEX {name} ON {table} ({columns})"
                       + (f" WHERE {where}" if where else ""))
    op.execute(
        "CREATE TABLE idempotency_keys ("
        "tenant_id VARCHAR(36) NOT NULL, message_id VARCHAR(200) NOT NULL, "
        "record_id VARCHAR(36) NOT NULL, published_at TIMESTAMP WITH TIME ZONE NOT NULL, "
        "CONSTRAINT pk_idempotency_keys PRIMARY KEY (tenant_id, message_id), "
        "CONSTRAINT fk_idempotency_keys_tenant_id_tenants FOREIGN KEY (tenant_id) "
        "REFERENCES tenants (id) ON DELETE CASCADE)")
    op.execute(
        "INSERT INTO idempotency_keys (tenant_id, message_id, record_id, published_at) "
        "SELECT DISTINCT ON (tenant_id, message_id) tenant_id, message_id, id, published_at "
        "FROM message_records WHERE published_at > now() - interval '24 hours' "
        "ORDER BY tenant_id, message_id, published_at DESC")


def downgrade() -> None:
    op.execute("DROP TABLE idempotency_keys")
    for table, (_, foreign_keys, indexes) in TABLES.items():
        new = f"{table}_partitioned"
        _set_aside(table, new, [name for name, _, _ in indexes])
        op.execute(f"CREATE TABLE {table} (LIKE {new} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {table} SELECT * FROM {new}")
        op.execute(f"DROP TABLE {new}")  # and its partitions
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")
        for column, referred in foreign_keys:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT fk_{table}_{column}_{referred} "
                       f"FOREIGN KEY ({column}) REFERENCES {referred} (id) ON DELETE CASCADE")
        for name, columns in PLAIN_INDEXES[table]:
            op.execute(f"CREATE INDEX {name} ON {table} ({columns})")
    op.execute("ALTER TABLE message_records ADD CONSTRAINT "
               "uq_message_records_tenant_id_message_id UNIQUE (tenant_id, message_id)")


def _set_aside(table: str, new_name: str, indexes: list[str]) -> None:
    """Rename a table out of the way, dropping its indexes and constraints (their names are
    the new table's), keeping its rows for the copy."""
    op.execute(f"ALTER TABLE {table} RENAME TO {new_name}")
    op.execute(f"ALTER TABLE {new_name} DROP CONSTRAINT pk_{table}")
    for name in indexes:
        op.execute(f"DROP INDEX IF EXISTS {name}")
