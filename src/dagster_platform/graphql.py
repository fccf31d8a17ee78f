"""The one client for the Dagster webserver's GraphQL API, with every query the platform asks in one place.

Used by the deploy smoke check (`ci/smoke.py`), the local runtime (`local/`), the tests and the benchmark.
Standard library only: deploy jobs run the smoke check from a plain checkout in a bare Python image.
Query shapes follow dagster_graphql's schema
(`python -c "from dagster_graphql.schema import create_schema; print(create_schema())"`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
DEFAULT_REPOSITORY = "__repository__"  # the repository name of a `Definitions` object

ENTRY = """
fragment Entry on WorkspaceLocationEntry {
  name
  loadStatus
  locationOrLoadError {
    __typename
    ... on RepositoryLocation { name repositories { name } }
    ... on PythonError { message }
  }
}"""

WORKSPACE = f"""{ENTRY}
query Workspace {{
  workspaceOrError {{
    __typename
    ... on Workspace {{ locationEntries {{ ...Entry }} }}
    ... on PythonError {{ message }}
  }}
}}"""

LOCATION = f"""{ENTRY}
query Location($name: String!) {{
  workspaceLocationEntryOrError(name: $name) {{
    __typename
    ... on WorkspaceLocationEntry {{ ...Entry }}
    ... on PythonError {{ message }}
  }}
}}"""

RELOAD = """
mutation Reload($name: String!) {
  reloadRepositoryLocation(repositoryLocationName: $name) {
    __typename
    ... on WorkspaceLocationEntry { name loadStatus }
    ... on PythonError { message }
    ... on RepositoryLocationNotFound { message }
    ... on UnauthorizedError { message }
    ... on ReloadNotSupported { message }
  }
}"""

RELOAD_WORKSPACE = f"""{ENTRY}
mutation ReloadWorkspace {{
  reloadWorkspace {{
    __typename
    ... on Workspace {{ locationEntries {{ ...Entry }} }}
    ... on PythonError {{ message }}
    ... on UnauthorizedError {{ message }}
  }}
}}"""

LAUNCH = """
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
}"""

RUN_FIELDS = "runId status jobName creationTime startTime endTime tags { key value }"
RUN = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename
    ... on Run {{ {RUN_FIELDS} }}
    ... on RunNotFoundError {{ message }}
    ... on PythonError {{ message }}
  }}
}}"""

RUNS = f"""
query Runs($filter: RunsFilter, $limit: Int) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename
    ... on Runs {{ results {{ {RUN_FIELDS} }} }}
    ... on PythonError {{ message }}
  }}
}}"""

# The asset graph's data as the UI (1.13) loads it: per location, every repository's assetNodes with their
# dependency keys (the UI's LocationWorkspaceAssetsQuery, fields of its RepositoryAsset fragment), here for the
# whole workspace in one request. Per repository, not the root `assetNodes`: that one merges nodes of the same
# key defined in several locations.
ASSET_GRAPH = """
query AssetGraph {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation {
            repositories {
              name
              assetNodes {
                id groupName graphName opNames jobNames computeKind kinds description(characterLimit: 240)
                isMaterializable isObservable isExecutable isPartitioned isAutoCreatedStub hasAssetChecks
                changedReasons hasMaterializePermission hasWipePermission hasReportRunlessAssetEventPermission
                assetKey { path } dependencyKeys { path } tags { key value }
                owners { ... on UserAssetOwner { email } ... on TeamAssetOwner { team } }
                partitionDefinition { dimensionTypes { type dynamicPartitionsDefinitionName } }
                automationCondition { __typename }
                storageAddress { storageKind tableName }
              }
              assetGroups { id groupName }
            }
          }
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}"""

# The runs page as the UI (1.13) asks it: runsFeedOrError (runs and backfills), 30 per page, roots only, with
# the run fields of its RunsFeedTableEntryFragment and RunActionsMenuRunFragment.
RUNS_FEED = """
query RunsFeed($limit: Int!, $cursor: String, $filter: RunsFilter, $view: RunsFeedView!) {
  runsFeedOrError(limit: $limit, cursor: $cursor, filter: $filter, view: $view) {
    __typename
    ... on RunsFeedConnection {
      cursor
      hasMore
      results {
        __typename id runStatus creationTime startTime endTime jobName tags { key value }
        ... on Run {
          repositoryOrigin { id repositoryLocationName repositoryName }
          assetSelectionPreview: assetSelection(limit: 25) { ... on AssetKey { path } }
          assetSelectionCount
          assetCheckSelectionPreview: assetCheckSelection(limit: 25) { name assetKey { path } }
          assetCheckSelectionCount
          hasReExecutePermission hasTerminatePermission hasDeletePermission canTerminate mode status
          pipelineName pipelineSnapshotId hasRunMetricsEnabled
        }
        ... on PartitionBackfill { backfillStatus: status partitionSetName numPartitions isAssetBackfill }
      }
    }
    ... on PythonError { message }
  }
}"""

DAEMONS = """
query Daemons {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy lastHeartbeatTime } } }
}"""

# Every schedule and sensor of one repository with its instigator state (id for `stop`, RUNNING/STOPPED).
AUTOMATION_STATES = """
query Automation($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      schedules { name scheduleState { id status } }
      sensors { name sensorState { id status } }
    }
    ... on PythonError { message }
    ... on RepositoryNotFoundError { message }
  }
}"""

# Schedules and sensors: one start and one stop per kind; the mutations differ only in names.
AUTOMATION = {
    "schedule": {
        "start": "startSchedule(scheduleSelector: $selector) { __typename "
        "... on ScheduleStateResult { scheduleState { id status } } "
        "... on PythonError { message } ... on ScheduleNotFoundError { message } }",
        "selector": "ScheduleSelector",
        "name_key": "scheduleName",
        "started": ("ScheduleStateResult", "scheduleState"),
        "stop": "stopRunningSchedule",
    },
    "sensor": {
        "start": "startSensor(sensorSelector: $selector) { __typename "
        "... on Sensor { sensorState { id status } } "
        "... on PythonError { message } ... on SensorNotFoundError { message } }",
        "selector": "SensorSelector",
        "name_key": "sensorName",
        "started": ("Sensor", "sensorState"),
        "stop": "stopSensor",
    },
}


class GraphQLError(RuntimeError):
    """One line: what failed and where (unreachable, HTTP status, not a webserver, or the API's own error)."""


class Client:
    def __init__(self, base_url: str, timeout: float = 30.0, headers: dict[str, str] | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = headers or {}

    def _request(self, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        url = f"{self.base_url}{path}"
        headers = {"Content-Type": "application/json", **self.headers}
        request = urllib.request.Request(url, data=body, method="POST" if body else "GET", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:  # a 400 carries the API's reason (e.g. an invalid query)
            raise GraphQLError(
                f"{url}: HTTP {exc.code} {exc.reason}: {exc.read()[:500].decode(errors='replace')}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise GraphQLError(f"{url}: cannot reach the webserver: {exc}") from exc

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        _, raw = self._request("/graphql", body)
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GraphQLError(f"{self.base_url}/graphql: answer is not JSON (is this a Dagster webserver?)") from exc
        if payload.get("errors"):
            raise GraphQLError(f"{self.base_url}/graphql: GraphQL errors: {payload['errors']}")
        return payload["data"]

    def server_info(self) -> int:
        """HTTP status of /server_info (0 when the webserver cannot be reached)."""
        try:
            return self._request("/server_info")[0]
        except GraphQLError:
            return 0

    # --- workspace -------------------------------------------------------------------------------
    def locations(self) -> dict[str, dict[str, Any]]:
        """name → {status: LOADING|LOADED, error: message or None, repositories: [...]}."""
        data = self.query(WORKSPACE)["workspaceOrError"]
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

    def all_loaded(self, names: list[str] | None = None) -> bool:
        """The named locations (default: every one, and there is at least one) are LOADED without error."""
        state = self.locations()
        names = list(state) if names is None else names
        return bool(names) and all(
            name in state and state[name]["status"] == "LOADED" and state[name]["error"] is None for name in names
        )

    def location_state(self, location: str) -> tuple[str, str]:
        """(state, detail) of one location: state is LOADED, LOADING, ERROR or MISSING."""
        entry = self.query(LOCATION, {"name": location})["workspaceLocationEntryOrError"]
        if entry is None:
            return "MISSING", f"location {location!r} is not in the webserver's workspace"
        if entry["__typename"] == "PythonError":
            return "ERROR", entry["message"]
        if entry["loadStatus"] != "LOADED":
            return "LOADING", f"location {location!r} is {entry['loadStatus']}"
        loaded = entry["locationOrLoadError"]
        if loaded is None:
            return "LOADING", f"location {location!r} has no load result yet"
        if loaded["__typename"] != "RepositoryLocation":
            return "ERROR", f"location {location!r} failed to load: {loaded.get('message', loaded['__typename'])}"
        repositories = ", ".join(repo["name"] for repo in loaded["repositories"])
        return "LOADED", f"location {location!r} is LOADED (repositories: {repositories})"

    def reload_location(self, name: str) -> None:
        result = self.query(RELOAD, {"name": name})["reloadRepositoryLocation"]
        if result["__typename"] != "WorkspaceLocationEntry":
            raise GraphQLError(f"reload of {name!r} refused: {result['__typename']}: {result.get('message', '')}")

    def reload_workspace(self) -> None:
        """Re-read the workspace file and reload every location (a location added to or removed from the file
        appears or disappears); returns once the webserver has the new workspace."""
        result = self.query(RELOAD_WORKSPACE)["reloadWorkspace"]
        if result["__typename"] != "Workspace":
            raise GraphQLError(f"reloadWorkspace refused: {result['__typename']}: {result.get('message', '')}")

    # --- runs ------------------------------------------------------------------------------------
    def launch_run(
        self,
        location: str,
        job: str,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        repository: str = DEFAULT_REPOSITORY,
    ) -> str:
        params = {
            "selector": {"repositoryLocationName": location, "repositoryName": repository, "jobName": job},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        data = self.query(LAUNCH, {"params": params})["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise GraphQLError(f"launchRun of {location}/{job} failed: {data}")
        return data["run"]["runId"]

    def run(self, run_id: str) -> dict[str, Any]:
        data = self.query(RUN, {"runId": run_id})["runOrError"]
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
        variables = {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}, "limit": limit}
        data = self.query(RUNS, variables)["runsOrError"]
        if data["__typename"] != "Runs":
            raise GraphQLError(f"runs query failed: {data}")
        return data["results"]

    def runs_feed(self, limit: int = 30, view: str = "ROOTS") -> list[dict[str, Any]]:
        """The UI's runs page: the newest `limit` entries (runs and backfills) of the runs feed."""
        variables = {"limit": limit, "cursor": None, "filter": None, "view": view}
        data = self.query(RUNS_FEED, variables)["runsFeedOrError"]
        if data["__typename"] != "RunsFeedConnection":
            raise GraphQLError(f"runs feed query failed: {data}")
        return data["results"]

    # --- assets ----------------------------------------------------------------------------------
    def asset_graph(self) -> dict[str, list[dict[str, Any]]]:
        """The asset graph page's data: location name → its asset nodes (with dependencyKeys); a location that
        failed to load has none."""
        data = self.query(ASSET_GRAPH)["workspaceOrError"]
        if data["__typename"] != "Workspace":
            raise GraphQLError(f"workspace error: {data.get('message')}")
        return {
            entry["name"]: [
                node
                for repo in (entry["locationOrLoadError"] or {}).get("repositories", [])
                for node in repo["assetNodes"]
            ]
            for entry in data["locationEntries"]
        }

    # --- schedules and sensors -------------------------------------------------------------------
    def start(self, kind: str, location: str, name: str, repository: str = DEFAULT_REPOSITORY) -> str:
        """Start a schedule or a sensor (kind); returns its state id for `stop`."""
        spec = AUTOMATION[kind]
        document = f"mutation Start($selector: {spec['selector']}!) {{ {spec['start']} }}"
        selector = {"repositoryLocationName": location, "repositoryName": repository, spec["name_key"]: name}
        data = next(iter(self.query(document, {"selector": selector}).values()))
        typename, state_key = spec["started"]
        if data["__typename"] != typename:
            raise GraphQLError(f"start {kind} {name}: {data}")
        return data[state_key]["id"]

    def automation(self, location: str) -> list[dict[str, str]]:
        """Every schedule and sensor of a location's repositories: kind, repository, name, id (for `stop`), status."""
        found = []
        for repository in self.locations()[location]["repositories"]:
            selector = {"repositoryLocationName": location, "repositoryName": repository}
            data = self.query(AUTOMATION_STATES, {"selector": selector})["repositoryOrError"]
            if data["__typename"] != "Repository":
                raise GraphQLError(f"repository {repository} of {location}: {data.get('message', data['__typename'])}")
            for kind in ("schedule", "sensor"):
                for item in data[f"{kind}s"]:
                    state = item[f"{kind}State"]
                    found.append({"kind": kind, "repository": repository, "name": item["name"], **state})
        return found

    def stop(self, kind: str, state_id: str) -> None:
        mutation = AUTOMATION[kind]["stop"]
        document = (
            f"mutation Stop($id: String!) {{ {mutation}(id: $id) {{ __typename ... on PythonError {{ message }} }} }}"
        )
        data = self.query(document, {"id": state_id})[mutation]
        if data["__typename"] == "PythonError":
            raise GraphQLError(f"{mutation}: {data['message']}")

    # --- daemons ---------------------------------------------------------------------------------
    def daemon_statuses(self) -> list[dict[str, Any]]:
        """The required daemons: daemonType, healthy, lastHeartbeatTime."""
        statuses = self.query(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
        return [status for status in statuses if status["required"]]

    def daemon_health(self) -> dict[str, bool | None]:
        return {status["daemonType"]: status["healthy"] for status in self.daemon_statuses()}

    def daemons_healthy(self, since: float = 0.0) -> bool:
        """Every required daemon is healthy with a heartbeat after `since` (epoch seconds): a persistent instance
        still holds the previous session's heartbeats, which count as healthy for a while."""
        try:
            required = self.daemon_statuses()
        except (GraphQLError, KeyError, TypeError):
            return False
        return bool(required) and all(s["healthy"] and (s["lastHeartbeatTime"] or 0) >= since for s in required)
