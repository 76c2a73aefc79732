"""Idempotency-Key records keep only the key's HMAC-SHA256 (``key_hash``) under the service's
IDEMPOTENCY_KEY_SECRET, never the key as sent: the keys kept before are hashed in place.

Revision ID: 0013
"""
import hashlib
import hmac

import sqlalchemy as sa
from alembic import op

from seteli_shared import ids
from seteli_shared.db import migration_settings

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TABLE = "payments_idempotency"


def key_digest(secret: str, key: str) -> str:
    """As ``payments.intake.key_digest`` makes it (written out here: a migration keeps its meaning)."""
    return ids.digest_text(hmac.new(secret.encode(), key.encode(), hashlib.sha256))


def upgrade() -> None:
    from payments.settings import PaymentsSettings

    secret = migration_settings(PaymentsSettings).idempotency_key_secret
    conn = op.get_bind()
    kept = conn.execute(sa.text(f"SELECT provider_id, key FROM {TABLE}")).all()
    for provider_id, key in kept:
        conn.execute(sa.text(f"UPDATE {TABLE} SET key = :digest WHERE provider_id = :provider_id AND key = :key"),
                     {"digest": key_digest(secret, key), "provider_id": provider_id, "key": key})
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("key", new_column_name="key_hash", existing_type=sa.String(200), type_=sa.String(64),
                           existing_nullable=False)


def downgrade() -> None:
    # a hash cannot be turned back into the key: the records go (a retry is then answered anew, as after
    # their retention)
    op.execute(f"DELETE FROM {TABLE}")
    with op.batch_alter_table(TABLE) as batch:
        batch.alter_column("key_hash", new_column_name="key", existing_type=sa.String(64), type_=sa.String(200),
                           existing_nullable=False)
