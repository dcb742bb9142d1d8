"""sweeps on Optuna: the study's and each trial's system attributes

Optuna's samplers and pruners keep state in their storage's system attributes (a grid point's id, a
rung's value for successive halving, CMA-ES's state, QMC's sample counter). Our tables stay the source of
truth and the study is rebuilt from them (trainyard/sweeps/study.py), so those attributes live here:
`sweeps.study_attrs` (written under the sweep's row lock when a trial is asked for) and
`jobs.trial_attrs` (written by the trial's worker when the pruner looks at an epoch).
`sweeps.importance` holds Optuna's parameter importances, computed by the worker whose trial ended
(optuna.importance imports scikit-learn, which the API never imports).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 16:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('study_attrs', JSON, nullable=True))
        batch_op.add_column(sa.Column('importance', JSON, nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trial_attrs', JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('trial_attrs')
    with op.batch_alter_table('sweeps', schema=None) as batch_op:
        batch_op.drop_column('importance')
        batch_op.drop_column('study_attrs')
