"""Run DAGs of dags/ with `dag.test()`, one after the other, and print what each did as one
JSON line: `python dagtest.py DAG_ID[=CONF_JSON] ...`.

A subprocess of the tests, so that the test's AIRFLOW_HOME and CLLM_HOME hold from Airflow's
import on; several DAGs in one process share the start-up (Airflow's import, numba's JIT).
"""

import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.models.asset import AssetEvent
from airflow.utils.session import create_session

bag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags"))
for arg in sys.argv[1:]:
    dag_id, _, conf = arg.partition("=")
    run = bag.get_dag(dag_id).test(run_conf=json.loads(conf) if conf else None)
    with create_session() as session:
        tasks = {ti.task_id: {"state": ti.state, "try_number": ti.try_number}
                 for ti in run.get_task_instances(session=session)}
        events = [e.extra for e in session.query(AssetEvent)
                  .filter(AssetEvent.source_run_id == run.run_id)]
    print("RESULT " + json.dumps({"dag_id": dag_id, "run_id": run.run_id, "state": run.state,
                                  "tasks": tasks, "events": events}), flush=True)
