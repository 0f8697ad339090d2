"""subscriptions unique per subscribing tenant

A public topic is subscribed to by several tenants; each tenant's consumer groups are its own
(the Redis group name carries the tenant id), so `(topic, consumer_group, consumer_name)`
is unique within the subscribing tenant, not across tenants: otherwise one tenant's names
would block, and reveal, another's.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

OLD = 'uq_message_subscriptions_topic_id_consumer_group_consumer_name'
NEW = 'uq_message_subscriptions_tenant_topic_group_name'


def upgrade() -> None:
    with op.batch_alter_table('message_subscriptions') as batch:
        batch.drop_constraint(OLD, type_='unique')
        batch.create_unique_constraint(
            NEW, ['tenant_id', 'topic_id', 'consumer_group', 'consumer_name'])


def downgrade() -> None:
    with op.batch_alter_table('message_subscriptions') as batch:
        batch.drop_constraint(NEW, type_='unique')
        batch.create_unique_constraint(OLD, ['topic_id', 'consumer_group', 'consumer_name'])
