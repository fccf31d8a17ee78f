"""A tiny client for the webserver's GraphQL API: launch runs, read their status, the workspace's load
state, reload a location, start/stop schedules and sensors. Query shapes follow dagster_graphql's schema
(`python -c "from dagster_graphql.schema import create_schema; print(create_schema())"`).
"""

from __future__ import annotations

import time
from typing import Any

import requests

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
DEFAULT_REPOSITORY = "__repository__"  # the repository name of a `Definitions` object


class GraphQLError(RuntimeError):
    pass


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.session.post(
            f"{self.base_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=self.timeout
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def server_info(self) -> int:
        return self.session.get(f"{self.base_url}/server_info", timeout=self.timeout).status_code

    # --- workspace -------------------------------------------------------------------------------
    WORKSPACE = """
    query Workspace {
      workspaceOrError {
        __typename
        ... on Workspace {
          locationEntries {
            name
            loadStatus
            locationOrLoadError {
              __typename
              ... on RepositoryLocation { repositories { name } }
              ... on PythonError { message }
            }
          }
        }
        ... on PythonError { message }
      }
    }"""

    def locations(self) -> dict[str, dict[str, Any]]:
        """name → {status: LOADING|LOADED, error: message or None, repositories: [...]}."""
        data = self.query(self.WORKSPACE)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise GraphQLError(f"workspace error: {data.get('message')}")
        result = {}
        for entry in data["locationEntries"]:
            loaded = entry["locationOrLoadError"] or {}
            result[entry["name"]] = {
                "status": entry["loadStatus"],
                "error": loaded.get("message") if loaded.get("__typename") == "PythonError" else None,
                "repositories": [r["name"] for r in loaded.get("repositories", [])],
            }
        return result

    def all_loaded(self, names: list[str]) -> bool:
        state = self.locations()
        return all(
            name in state and state[name]["status"] == "LOADED" and state[name]["error"] is None for name in names
        )

    def reload_location(self, name: str) -> dict[str, Any]:
        data = self.query(
            """
            mutation Reload($name: String!) {
              reloadRepositoryLocation(repositoryLocationName: $name) {
                __typename
                ... on WorkspaceLocationEntry {
                  name
                  loadStatus
                  locationOrLoadError { __typename ... on PythonError { message } }
                }
                ... on PythonError { message }
              }
            }""",
            {"name": name},
        )["reloadRepositoryLocation"]
        if data["__typename"] != "WorkspaceLocationEntry":
            raise GraphQLError(f"reload of {name} failed: {data}")
        return data

    # --- runs ------------------------------------------------------------------------------------
    def launch_run(
        self,
        location: str,
        job: str,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        repository: str = DEFAULT_REPOSITORY,
    ) -> str:
        data = self.query(
            """
            mutation Launch($params: ExecutionParams!) {
              launchRun(executionParams: $params) {
                __typename
                ... on LaunchRunSuccess { run { runId status } }
                ... on PythonError { message stack }
                ... on RunConfigValidationInvalid { errors { message } }
                ... on PipelineNotFoundError { message }
                ... on InvalidSubsetError { message }
                ... on RunConflict { message }
                ... on UnauthorizedError { message }
              }
            }""",
            {
                "params": {
                    "selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
                    "runConfigData": run_config or {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRun of {location}/{job} failed: {data}")
        return data["run"]["runId"]

    RUN = """
    query Run($runId: ID!) {
      runOrError(runId: $runId) {
        __typename
        ... on Run { runId status jobName creationTime startTime endTime tags { key value } }
        ... on RunNotFoundError { message }
        ... on PythonError { message }
      }
    }"""

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.query(self.RUN, {"runId": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise GraphQLError(f"run {run_id}: {data}")
        return data

    def wait_run(self, run_id: str, timeout: float = 180.0, interval: float = 0.25) -> dict[str, Any]:
        """Poll until the run reaches a terminal status; returns the run (status may be FAILURE)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(run_id)
            if run["status"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']} after {timeout:.0f}s")
            time.sleep(interval)

    def runs(self, tags: dict[str, str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        data = self.query(
            """
            query Runs($filter: RunsFilter, $limit: Int) {
              runsOrError(filter: $filter, limit: $limit) {
                __typename
                ... on Runs { results { runId status jobName creationTime startTime endTime tags { key value } } }
                ... on PythonError { message }
              }
            }""",
            {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}, "limit": limit},
        )["runsOrError"]
        if data["__typename"] != "Runs":
            raise GraphQLError(f"runs query failed: {data}")
        return data["results"]

    # --- schedules and sensors -------------------------------------------------------------------
    def start_schedule(self, location: str, name: str, repository: str = DEFAULT_REPOSITORY) -> str:
        data = self.query(
            """
            mutation Start($selector: ScheduleSelector!) {
              startSchedule(scheduleSelector: $selector) {
                __typename
                ... on ScheduleStateResult { scheduleState { id status } }
                ... on PythonError { message }
                ... on ScheduleNotFoundError { message }
              }
            }""",
            {"selector": {"repositoryLocationName": location, "repositoryName": repository, "scheduleName": name}},
        )["startSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise GraphQLError(f"startSchedule {name}: {data}")
        return data["scheduleState"]["id"]

    def stop_schedule(self, state_id: str) -> None:
        data = self.query(
            """
            mutation Stop($id: String!) {
              stopRunningSchedule(id: $id) { __typename ... on PythonError { message } }
            }""",
            {"id": state_id},
        )["stopRunningSchedule"]
        if data["__typename"] != "ScheduleStateResult":
            raise GraphQLError(f"stopRunningSchedule: {data}")

    def start_sensor(self, location: str, name: str, repository: str = DEFAULT_REPOSITORY) -> str:
        data = self.query(
            """
            mutation Start($selector: SensorSelector!) {
              startSensor(sensorSelector: $selector) {
                __typename
                ... on Sensor { sensorState { id status } }
                ... on PythonError { message }
                ... on SensorNotFoundError { message }
              }
            }""",
            {"selector": {"repositoryLocationName": location, "repositoryName": repository, "sensorName": name}},
        )["startSensor"]
        if data["__typename"] != "Sensor":
            raise GraphQLError(f"startSensor {name}: {data}")
        return data["sensorState"]["id"]

    def stop_sensor(self, state_id: str) -> None:
        data = self.query(
            """
            mutation Stop($id: String!) {
              stopSensor(id: $id) { __typename ... on PythonError { message } }
            }""",
            {"id": state_id},
        )["stopSensor"]
        if data["__typename"] == "PythonError":
            raise GraphQLError(f"stopSensor: {data}")

    def daemon_health(self) -> dict[str, bool | None]:
        data = self.query(
            """
            query Daemons {
              instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
            }"""
        )
        return {
            d["daemonType"]: d["healthy"]
            for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
            if d["required"]
        }
