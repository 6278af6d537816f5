"""What every task's training shares: the one loop (loop.py) over the Task interface (task.py), the budget and evaluation cadence, the events a run reports, and the loop's part of a checkpoint."""
