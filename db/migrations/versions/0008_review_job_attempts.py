"""review_jobs.attempts: how many apply runs failed on a job (its retries are counted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24

Reviewed by hand: one column with a default. A job that failed before this revision failed
once (the old code never retried), so a job with an error counts one attempt; and one that a
later run of its reel has served since is done (it would read as a delivery behind).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('review_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False,
                                      server_default='0'))
    op.execute("UPDATE review_jobs SET attempts = 1 WHERE error IS NOT NULL")
    # The old code never ran a failed job again; one older than a job of its reel that a run
    # finished since was served by that run (it delivers the reel as it is), so it is done.
    op.execute("UPDATE review_jobs SET status = 'done' WHERE status = 'failed' AND EXISTS ("
               "SELECT 1 FROM review_jobs AS later WHERE later.reel_id = review_jobs.reel_id "
               "AND later.status = 'done' AND later.id > review_jobs.id)")


def downgrade() -> None:
    with op.batch_alter_table('review_jobs', schema=None) as batch_op:
        batch_op.drop_column('attempts')
