"""activities.seed is 64-bit.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Synthesis seeds are 32-bit unsigned (`tasks.synth.shot_seed`, what numpy accepts); Postgres'
INTEGER is signed 32-bit, so half of all shots failed to record their synth activity on
Postgres ("integer out of range") while SQLite, which has no fixed widths, stored them.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.alter_column("seed", existing_type=sa.Integer(), type_=sa.BigInteger(),
                           existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.alter_column("seed", existing_type=sa.BigInteger(), type_=sa.Integer(),
                           existing_nullable=True)
