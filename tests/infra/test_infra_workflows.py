"""GitHub workflows: actionlint on the real files (and on a broken one), plus
the release process they encode: CI in the builder image, semver-tag
releases, test deployed automatically, production behind an approval, and
the off-hours scaling reading the same settings as Terraform.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.fixtures.infra import (
    COMPONENTS,
    FIXTURES,
    ROOT,
    TERRAFORM,
    WORKFLOWS,
    load_hcl,
    run,
    tool,
)


def workflow(name: str) -> dict[str, Any]:
    """A workflow file; PyYAML reads the `on:` key as True, so it is renamed back."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True)
    return data


def steps_text(job: dict[str, Any]) -> str:
    return "\n".join(
        str(step.get("run", "")) + str(step.get("uses", "")) for step in job.get("steps", [])
    )


def test_actionlint_passes_every_workflow() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {
        "ci.yml",
        "release.yml",
        "deploy.yml",
        "scale-test-nodes.yml",
    }
    # Files named explicitly: actionlint then needs no git checkout around them.
    result = run(tool("actionlint"), "-no-color", *files, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_actionlint_rejects_a_broken_workflow() -> None:
    result = run(tool("actionlint"), "-no-color", FIXTURES / "workflows" / "broken.yml", cwd=ROOT)
    assert result.returncode != 0
    for rule in ("[events]", "[job-needs]", "[action]", "[expression]"):
        assert rule in result.stdout


@pytest.mark.parametrize("name", sorted(p.name for p in WORKFLOWS.glob("*.yml")))
def test_least_privilege_and_bounded_jobs(name: str) -> None:
    data = workflow(name)
    assert data["permissions"].get("contents") == "read", "default token must be read-only"
    for job_name, job in data["jobs"].items():
        assert "write-all" not in str(job.get("permissions", ""))
        if "uses" not in job:  # a call of a reusable workflow is bounded by that workflow
            assert job["timeout-minutes"] <= 60, job_name


def test_ci_tests_in_the_builder_image_and_builds_every_image() -> None:
    ci = workflow("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    test = ci["jobs"]["test"]
    build = next(step for step in test["steps"] if "build-push-action" in step.get("uses", ""))
    assert build["with"]["target"] == "builder"
    assert "tagloop-builder:ci test" in steps_text(test)
    images = ci["jobs"]["images"]
    assert images["strategy"]["matrix"]["service"] == list(COMPONENTS)
    infra = steps_text(ci["jobs"]["infra"])
    for command in (
        "./dev lint:infra",
        "fmt -check -recursive",
        "terraform -chdir=terraform validate",
    ):
        assert command in infra


def test_release_on_semver_tags_deploys_test_then_approved_production() -> None:
    release = workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v[0-9]+.[0-9]+.[0-9]+"]}}
    jobs = release["jobs"]
    assert jobs["images"]["strategy"]["matrix"]["service"] == list(COMPONENTS)
    push = next(
        step for step in jobs["images"]["steps"] if "build-push-action" in step.get("uses", "")
    )
    assert push["with"]["push"] is True
    assert push["with"]["tags"].endswith(":${{ needs.version.outputs.version }}")
    assert "helm push" in steps_text(jobs["chart"])
    test, production = jobs["deploy-test"], jobs["deploy-production"]
    assert test["uses"] == production["uses"] == "./.github/workflows/deploy.yml"
    assert set(test["needs"]) >= {"images", "chart"}
    assert "deploy-test" in production["needs"]
    assert (test["with"]["environment"], production["with"]["environment"]) == (
        "test",
        "production",
    )
    deploy = workflow("deploy.yml")
    apply = deploy["jobs"]["apply"]
    # The GitHub environment gates the job: required reviewers on "production".
    assert apply["environment"] == "${{ inputs.environment }}"
    assert (
        './dev terraform:apply ENV="$ENVIRONMENT" VERSION="$VERSION" -- -auto-approve'
        in steps_text(apply)
    )
    assert deploy["permissions"]["id-token"] == "write"  # keyless Workload Identity Federation


def test_node_pool_schedule_scales_down_at_night_and_up_in_the_morning() -> None:
    scale = workflow("scale-test-nodes.yml")
    crons = [entry["cron"] for entry in scale["on"]["schedule"]]
    assert crons == ["0 19 * * 1-5", "0 6 * * 1-5"]
    job = scale["jobs"]["scale"]
    assert job["environment"] == "test"
    text = steps_text(job)
    assert "--num-nodes 0" in text and "--no-enable-autoscaling" in text
    assert '--enable-autoscaling --min-nodes "$MIN" --max-nodes "$MAX"' in text


def test_node_pool_schedule_reads_the_terraform_settings() -> None:
    """Run the workflow's own tfvars reader and compare with python-hcl2."""
    job = workflow("scale-test-nodes.yml")["jobs"]["scale"]
    script = next(step["run"] for step in job["steps"] if step.get("id") == "pool")
    reader = script.splitlines()[0]
    assert reader.startswith("tfvar()")
    names = ("environment", "cluster_location", "node_min_count", "node_max_count")
    shell = reader + "\n" + "\n".join(f"tfvar {name}" for name in names)
    output = subprocess.run(
        ["sh", "-c", shell], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    expected = load_hcl(TERRAFORM / "environments" / "test.tfvars")
    assert output.split() == [str(expected[name]) for name in names]


def action_references() -> list[tuple[str, str]]:
    """(workflow file, `uses:` value) of every step and reusable-workflow call."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            found += [(path.name, step["uses"]) for step in job.get("steps", []) if "uses" in step]
            if "uses" in job:
                found.append((path.name, job["uses"]))
    return found


def unpinned(references: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Actions referenced by a movable tag or branch instead of a full commit SHA."""
    return [
        (name, uses)
        for name, uses in references
        if not uses.startswith("./") and not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses)
    ]


def test_every_action_is_pinned_by_full_commit_sha() -> None:
    references = action_references()
    assert len(references) > 10
    assert unpinned(references) == []
    # and the check catches a tag
    assert unpinned([("ci.yml", "actions/checkout@v5")]) == [("ci.yml", "actions/checkout@v5")]


def test_releases_deploy_the_images_by_the_digests_resolved_once() -> None:
    jobs = workflow("release.yml")["jobs"]
    assert "docker buildx imagetools inspect" in steps_text(jobs["digests"])
    for name in ("deploy-test", "deploy-production"):
        assert "digests" in jobs[name]["needs"]
        assert jobs[name]["with"]["image-digests"] == "${{ needs.digests.outputs.image-digests }}"
    apply = workflow("deploy.yml")["jobs"]["apply"]
    (step,) = [step for step in apply["steps"] if step.get("name") == "Apply"]
    assert step["env"]["TF_VAR_image_digests"] == "${{ inputs.image-digests }}"
