"""run owners and outcomes, request keys of jobs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 16:40:00

* ``runs.owner_id``: the lease of the process training the run; a run left ``running``
  by an owner whose lease expired is an interrupted run.
* ``runs.reason``: why a run ended (``stopped``: the stop reason; ``failed``: the error).
* ``jobs.request_key``: a key naming what a job computes (run, circuit, bindings, shots,
  seed), so a restarted run finds the jobs it already sent and re-attaches to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('reason', sa.String(length=2000), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_key', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_request_key'), ['request_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_request_key'))
        batch_op.drop_column('request_key')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('owner_id')
