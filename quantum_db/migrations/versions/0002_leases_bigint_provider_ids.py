"""leases, dataset writes in progress, owners of reservations and jobs, 64-bit integers

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:30:00

* ``leases``: one row per live owner (a connection) renewed by heartbeat; the sweeper
  reclaims the reservations, jobs and dataset writes of owners whose lease expired.
* ``dataset_writes``: the namespace of a dataset version being written, until it commits.
* ``budget_ledger.owner_id`` and ``jobs.owner_id``: who holds a reservation, who sent a job.
* ``jobs.provider_job_ids`` (JSON list) replaces the comma-joined ``provider_job_id``
  (``String(128)``, which cut ids off); existing ids are carried over.
* Steps, versions, seeds, positions and counts become BIGINT on PostgreSQL (SQLite's
  INTEGER is already 64-bit), so both dialects store the same range.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, nullable) widened to BIGINT on PostgreSQL.
_WIDENED = (
    ('datasets', 'version', False),
    ('datasets', 'dim', False),
    ('datasets', 'n_samples', False),
    ('datasets', 'n_classes', True),
    ('vectors', 'position', False),
    ('vectors', 'dim', False),
    ('model_versions', 'version', False),
    ('model_aliases', 'version', False),
    ('runs', 'seed', True),
    ('checkpoints', 'step', False),
    ('metrics', 'step', False),
    ('jobs', 'shots', True),
    ('jobs', 'batch_size', False),
)


def upgrade() -> None:
    op.create_table('leases',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('heartbeat_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_leases'))
    )
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_leases_expires_at'), ['expires_at'], unique=False)

    op.create_table('dataset_writes',
    sa.Column('namespace', sa.String(length=128), nullable=False),
    sa.Column('dataset_name', sa.String(length=128), nullable=False),
    sa.Column('owner_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('namespace', name=op.f('pk_dataset_writes'))
    )
    with op.batch_alter_table('dataset_writes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_writes_owner_id'), ['owner_id'], unique=False)

    with op.batch_alter_table('budget_ledger', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_budget_ledger_owner_id'), ['owner_id'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_job_ids', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('owner_id', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_jobs_owner_id'), ['owner_id'], unique=False)

    jobs = sa.table(
        'jobs',
        sa.column('id', sa.String()),
        sa.column('provider_job_id', sa.String()),
        sa.column('provider_job_ids', sa.JSON()),
    )
    connection = op.get_bind()
    for job_id, joined in connection.execute(sa.select(jobs.c.id, jobs.c.provider_job_id)).all():
        ids = [i for i in (joined or '').split(',') if i]
        connection.execute(
            jobs.update().where(jobs.c.id == job_id).values(provider_job_ids=ids)
        )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.alter_column('provider_job_ids', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('provider_job_id')

    if connection.dialect.name == 'postgresql':
        for table, column, nullable in _WIDENED:
            op.alter_column(
                table,
                column,
                existing_type=sa.Integer(),
                type_=sa.BigInteger(),
                existing_nullable=nullable,
            )


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == 'postgresql':
        for table, column, nullable in _WIDENED:
            op.alter_column(
                table,
                column,
                existing_type=sa.BigInteger(),
                type_=sa.Integer(),
                existing_nullable=nullable,
            )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_job_id', sa.String(length=128), nullable=True))
    jobs = sa.table(
        'jobs',
        sa.column('id', sa.String()),
        sa.column('provider_job_id', sa.String()),
        sa.column('provider_job_ids', sa.JSON()),
    )
    for job_id, ids in connection.execute(sa.select(jobs.c.id, jobs.c.provider_job_ids)).all():
        if isinstance(ids, str):
            ids = json.loads(ids)
        joined = ','.join(ids or [])[:128] or None
        connection.execute(jobs.update().where(jobs.c.id == job_id).values(provider_job_id=joined))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_owner_id'))
        batch_op.drop_column('owner_id')
        batch_op.drop_column('provider_job_ids')
    with op.batch_alter_table('budget_ledger', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_budget_ledger_owner_id'))
        batch_op.drop_column('owner_id')
    with op.batch_alter_table('dataset_writes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_writes_owner_id'))
    op.drop_table('dataset_writes')
    with op.batch_alter_table('leases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_leases_expires_at'))
    op.drop_table('leases')
