"""envelopes: the queue's summary of each version (events, lowest confidence, doubt).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24

Reviewed by hand: three nullable columns, no server default. Versions saved before this
revision keep NULL `events` until a queue reads them (`tasks.decisions.summaries` fills them
from the envelope file once): a migration does not read the artifact store.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('envelopes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('events', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('confidence', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('doubt', sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('envelopes', schema=None) as batch_op:
        batch_op.drop_column('doubt')
        batch_op.drop_column('confidence')
        batch_op.drop_column('events')
