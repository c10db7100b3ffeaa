"""Airflow assets shared by the DAGs (imported by DAG files only: it imports ``airflow.sdk``).

``LANDING`` stands for "new files in the landing zone": the ``rollguard_landing_watch`` DAG emits an
event on it when undecided files wait there, and ``rollguard_retrain`` is scheduled on that event
or on its weekly time, whichever comes first (Airflow's ``AssetOrTimeSchedule``).
"""

from __future__ import annotations

from airflow.sdk import Asset

#: New data waiting in the landing zone (a name, not a path: the landing folder comes from the
#: settings of the process that runs the task, which differ between laptop and stack).
LANDING = Asset(name="rollguard_landing", uri="rollguard://landing")
