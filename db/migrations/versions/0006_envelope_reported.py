"""envelopes.reported_at: when a completed pass reported a prediction.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24

Reviewed by hand: one nullable column. Predictions saved before this revision were reported
by the pass that saved them (the rule until now), so they are stamped with their own
`created_at`: the first pass after the upgrade has no old note to say again.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('envelopes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reported_at', sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE envelopes SET reported_at = created_at WHERE created_by IS NULL")


def downgrade() -> None:
    with op.batch_alter_table('envelopes', schema=None) as batch_op:
        batch_op.drop_column('reported_at')
