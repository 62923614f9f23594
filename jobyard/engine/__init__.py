"""Supervisors: the scheduler loop and the task controller, glue of store and runners."""
