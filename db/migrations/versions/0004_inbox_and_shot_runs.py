"""overnight passes: inbox reel versions, shot runs of the scale-out.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Reviewed by hand: `inbox_reels` has one row per (inbox, timeline path, content hash) — the
unique constraint is what makes "each version processed once" hold across workers; JSON as in
0001 (JSONB on Postgres), server defaults dialect-neutral.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        'inbox_reels',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('inbox', sa.Text(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('content_sha256', sa.String(length=64), nullable=False),
        sa.Column('reel', sa.String(length=200), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default=sa.text('1'), nullable=False),
        sa.Column('worker', sa.String(length=200), nullable=True),
        sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
        sa.Column('delivery_dir', sa.Text(), nullable=True),
        sa.Column('summary', JSON_DOC, server_default=sa.text("'{}'"), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('running', 'done', 'failed', 'rejected')",
                           name=op.f('ck_inbox_reels_status')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox_reels')),
        sa.UniqueConstraint('inbox', 'path', 'content_sha256',
                            name=op.f('uq_inbox_reels_inbox_path_content_sha256')),
    )
    op.create_table(
        'shot_runs',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('shot_id', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(length=200), nullable=False),
        sa.Column('prefect_flow_run_id', sa.String(length=64), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('seconds', sa.Double(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.ForeignKeyConstraint(['shot_id'], ['shots.id'], name=op.f('fk_shot_runs_shot_id_shots'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_shot_runs')),
    )
    with op.batch_alter_table('shot_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shot_runs_shot_id'), ['shot_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('shot_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shot_runs_shot_id'))
    op.drop_table('shot_runs')
    op.drop_table('inbox_reels')
