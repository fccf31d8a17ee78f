"""Write deploy/values-<env>.yaml for every platform environment, from deploy/values.yaml.jinja.

cookiecutter renders one file per template file; the environments are a list (cookiecutter._platform, from the
platform's platform/values/), so this hook renders the one template once per environment and removes it. It runs
inside the new project directory with cookiecutter's own Python, which has Jinja2. No other Jinja than
`rendered_answers()`: the file stays importable as plain Python.
"""

import contextlib
import json
import os
import sys
from pathlib import Path

import jinja2

TEMPLATE = Path("deploy") / "values.yaml.jinja"

if __name__ == "__main__":
    # cookiecutter leaves its rendered copy of this hook (answers included) in a temporary file: remove it first.
    with contextlib.suppress(OSError):
        os.unlink(__file__)


def rendered_answers() -> dict:
    return json.loads(r"""{{ cookiecutter | tojson }}""")


def write_deploy_values(answers: dict, project: Path = Path()) -> list[Path]:
    template = project / TEMPLATE
    jinja = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    compiled = jinja.from_string(template.read_text())
    written = []
    for env in answers["_platform"]["environments"]:
        target = project / "deploy" / f"values-{env['name']}.yaml"
        target.write_text(compiled.render(cookiecutter=answers, env=env))
        written.append(target)
    template.unlink()
    return written


if __name__ == "__main__":
    write_deploy_values(rendered_answers())
    sys.exit(0)
