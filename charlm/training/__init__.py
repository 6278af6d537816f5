"""What every task's training shares: the budget and evaluation cadence, and the events a training run reports."""
