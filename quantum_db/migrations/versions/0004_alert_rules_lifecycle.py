"""alert rules, severities and lifecycle

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 06:40:00

* ``alerts.rule``: the name of the rule that fired (``None`` for an alert raised by hand).
* ``alerts.severity``: ``info``, ``warning`` or ``error`` (rows from before: ``warning``).
* ``alerts.step``: the training step of the latest firing.
* ``alerts.count``: how many firings this one row stands for (repeats are deduplicated).
* ``alerts.updated_at`` / ``alerts.resolved_at``: the latest firing, and when the
  condition cleared (``None`` while the alert is open).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rule', sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column('severity', sa.String(length=16), nullable=False, server_default='warning')
        )
        batch_op.add_column(
            sa.Column('step', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                'count',
                sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                nullable=False,
                server_default='1',
            )
        )
        batch_op.add_column(sa.Column('updated_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_alerts_rule'), ['rule'], unique=False)
    op.execute('UPDATE alerts SET updated_at = created_at')


def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_rule'))
        batch_op.drop_column('resolved_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('count')
        batch_op.drop_column('step')
        batch_op.drop_column('severity')
        batch_op.drop_column('rule')
