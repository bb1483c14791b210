"""shot_stages: the run of each stage whose outputs a shot uses now.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Reviewed by hand. Until now a shot's outputs were looked up as its own latest completed run
of the stage, which a run the cache gave it from another shot (same source range, an earlier
cut) never was: the shot found nothing, or its previous cut's. The table is filled with what
that lookup gave, so nothing changes for a database until its next pass sets each pointer.
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'shot_stages',
        sa.Column('shot_id', sa.Integer(), nullable=False),
        sa.Column('task', sa.String(length=100), nullable=False),
        sa.Column('activity_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['activity_id'], ['activities.id'],
                                name=op.f('fk_shot_stages_activity_id_activities'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['shot_id'], ['shots.id'],
                                name=op.f('fk_shot_stages_shot_id_shots'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('shot_id', 'task', name=op.f('pk_shot_stages')),
    )
    with op.batch_alter_table('shot_stages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shot_stages_activity_id'), ['activity_id'],
                              unique=False)
    op.execute(
        "INSERT INTO shot_stages (shot_id, task, activity_id) "
        "SELECT shot_id, task, id FROM ("
        " SELECT shot_id, task, id, ROW_NUMBER() OVER ("
        "  PARTITION BY shot_id, task ORDER BY ended_at DESC, id DESC) AS n"
        " FROM activities WHERE status = 'completed' AND shot_id IS NOT NULL) AS latest "
        "WHERE n = 1")


def downgrade() -> None:
    with op.batch_alter_table('shot_stages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shot_stages_activity_id'))
    op.drop_table('shot_stages')
