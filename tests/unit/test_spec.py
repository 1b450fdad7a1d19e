"""JobSpec validation: unknown fields, bad values and bad URIs fail naming the field."""

from __future__ import annotations

import pytest

from model.networks.resolve import stage_adapter, stage_settings
from pipeline.errors import JobSetupError
from pipeline.graph.model_stages import check_weights
from schemas.spec import JobSpec, SpecError, load_yaml_mapping

BASE = {"inputs": ["s3://bucket/images/"], "output": "/tmp/out"}


def parse(**changes):
    return JobSpec.parse({**BASE, **changes})


def test_minimal_spec_has_documented_defaults():
    spec = parse()
    assert spec.job_id == "default"
    assert spec.filter.mode == "coarse"
    assert spec.stage1.num_cpus < 1  # actors must not hold whole CPUs on small machines


def test_unknown_field_is_rejected_with_its_name():
    with pytest.raises(SpecError) as err:
        parse(batchsize=4)
    assert "batchsize: unknown field" in str(err.value)


def test_unknown_nested_field_is_rejected_with_its_path():
    with pytest.raises(SpecError) as err:
        parse(stage1={"batch": 4})
    assert "stage1.batch: unknown field" in str(err.value)


def test_negative_batch_size_names_field_value_and_rule():
    with pytest.raises(SpecError) as err:
        parse(stage1={"batch_size": -2})
    message = str(err.value)
    assert "stage1.batch_size" in message
    assert "-2" in message
    assert "greater than 0" in message


def test_unsupported_uri_scheme_names_the_field():
    with pytest.raises(SpecError) as err:
        parse(output="ftpx://host/out")
    message = str(err.value)
    assert "output:" in message
    assert "unsupported scheme 'ftpx://'" in message


def test_unsupported_scheme_in_inputs_names_the_list_item():
    with pytest.raises(SpecError) as err:
        parse(inputs=["/data/a.jpg", "bogus://x/y.jpg"])
    assert "inputs:" in str(err.value)
    assert "bogus" in str(err.value)


def test_exactly_one_source():
    with pytest.raises(SpecError, match="exactly one of 'inputs'"):
        JobSpec.parse({"output": "/tmp/o"})
    with pytest.raises(SpecError, match="exactly one of 'inputs'"):
        parse(manifest="/tmp/list.txt")


def test_bad_job_id():
    with pytest.raises(SpecError, match="job_id"):
        parse(job_id="../escape")


def test_spec_is_frozen():
    spec = parse()
    with pytest.raises(Exception, match="frozen"):
        spec.job_id = "other"  # type: ignore[misc]


def test_yaml_round_trip_and_secrets_never_written(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "job_id: j1\n"
        "inputs: [s3://b/p/]\n"
        "output: s3://b/out\n"
        "filter: {mode: nms, nms_iou: 0.6}\n"
        "storage: {endpoint_url: 'http://127.0.0.1:9', access_key_id: AKIAXYZ, secret_access_key: s3cr3t}\n"
    )
    spec = JobSpec.from_yaml(path)
    assert spec.filter.mode == "nms" and spec.filter.nms_iou == 0.6
    assert spec.storage.secret_access_key.get_secret_value() == "s3cr3t"
    text = spec.to_yaml() + repr(spec) + str(spec.to_public_dict())
    assert "s3cr3t" not in text and "AKIAXYZ" not in text
    again = JobSpec.from_yaml(_write(tmp_path / "again.yaml", spec.to_yaml()))
    assert again.filter == spec.filter and again.inputs == spec.inputs


def test_secret_values_are_not_echoed_in_errors():
    with pytest.raises(SpecError) as err:
        parse(storage={"access_key_id": "AKIAONLY"})
    assert "AKIAONLY" not in str(err.value)
    assert "storage" in str(err.value)


def test_yaml_must_be_a_mapping(tmp_path):
    with pytest.raises(SpecError, match="mapping"):
        JobSpec.from_yaml(_write(tmp_path / "x.yaml", "- a\n- b\n"))


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("job_id", ["abc\n", "abc\r\n", "", " abc", "abc/..", "a" * 129])
def test_job_ids_that_are_not_one_plain_name_are_rejected(job_id):
    # "abc\n" passed a `re.match(...$)` check and wrote into job "abc"'s folder.
    with pytest.raises(SpecError, match="job_id"):
        parse(job_id=job_id)


def test_job_id_from_a_yaml_block_scalar_keeps_its_newline_and_is_rejected(tmp_path):
    path = _write(tmp_path / "j.yaml", "job_id: |\n  abc\ninputs: [/x]\noutput: /o\n")
    with pytest.raises(SpecError, match="job_id"):
        JobSpec.from_yaml(path)


@pytest.mark.parametrize(
    "storage",
    [
        {"secret_acess_key": "wJalrXUtnFEMIK7MDENG"},  # misspelled key
        {"acces_key_id": "AKIAWJALRXUTNFEMIK7M", "secret_access_key": "wJalrXUtnFEMIK7MDENG"},
        {"endpoint_url": {"nested": "wJalrXUtnFEMIK7MDENG"}},
    ],
)
def test_misplaced_credentials_are_reported_by_field_name_only(storage):
    with pytest.raises(SpecError) as err:
        parse(storage=storage)
    message = str(err.value)
    assert "wJalrXUtnFEMIK7MDENG" not in message and "AKIAWJALRXUTNFEMIK7M" not in message
    assert "storage." in message


def test_unknown_top_level_field_is_named_without_its_value():
    with pytest.raises(SpecError) as err:
        parse(aws_secret="wJalrXUtnFEMIK7MDENG")
    assert "aws_secret: unknown field" in str(err.value)
    assert "wJalrXUtnFEMIK7MDENG" not in str(err.value)


def test_empty_spec_file_is_an_error_not_the_defaults(tmp_path):
    for text in ("", "\n# only a comment\n"):
        with pytest.raises(SpecError, match="empty"):
            load_yaml_mapping(_write(tmp_path / "empty.yaml", text))


def test_non_utf8_spec_file_error_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("job_id: caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError) as err:
        JobSpec.from_yaml(path)
    assert str(path) in str(err.value) and "UTF-8" in str(err.value)


# -- one path from file and flags to a spec (JobSpec.from_yaml, used by `detpose run`) -----------


def _run_spec(*argv: str) -> JobSpec:
    from jobs.cli import build_parser
    from jobs.run_cmd import spec_from_args

    return spec_from_args(build_parser().parse_args(["run", *argv]))


def test_run_flags_override_the_spec_file_and_keep_its_other_fields(tmp_path):
    path = _write(
        tmp_path / "job.yaml",
        "inputs: [a.jpg]\noutput: o\njob_id: j\nfilter: {mode: nms, min_keypoints: 5}\n",
    )
    spec = _run_spec("--spec", str(path), "--filter", "none", "--output", "o2", "--job-id", "k")
    assert (spec.inputs, spec.output, spec.job_id) == (("a.jpg",), "o2", "k")
    assert (spec.filter.mode, spec.filter.min_keypoints) == ("none", 5)
    assert _run_spec("--spec", str(path)).filter.mode == "nms"


def test_run_source_flag_replaces_the_files_source(tmp_path):
    with_inputs = _write(tmp_path / "i.yaml", "inputs: [a.jpg]\n")
    with_manifest = _write(tmp_path / "m.yaml", "manifest: list.txt\n")
    spec = _run_spec("--spec", str(with_inputs), "--manifest", "other.txt")
    assert (spec.inputs, spec.manifest) == ((), "other.txt")
    spec = _run_spec("--spec", str(with_manifest), "--input", "b.jpg")
    assert (spec.inputs, spec.manifest) == (("b.jpg",), None)
    with pytest.raises(SpecError, match="exactly one of 'inputs'"):
        _run_spec("--input", "b.jpg", "--manifest", "other.txt")


def test_run_defaults_are_the_bundled_samples_and_out(tmp_path):
    from jobs.run_cmd import sample_images

    spec = _run_spec()
    assert spec.inputs == tuple(sample_images()) and spec.inputs and spec.output == "out"
    path = _write(tmp_path / "d.yaml", "inputs: []\ndevice: cpu\n")  # an empty source: samples
    spec = _run_spec("--spec", str(path))
    assert (spec.inputs, spec.device) == (tuple(sample_images()), "cpu")
    manifest_only = _write(tmp_path / "m.yaml", "manifest: list.txt\n")
    assert _run_spec("--spec", str(manifest_only)).inputs == ()


def test_run_refuses_an_empty_job_id_naming_the_source(tmp_path):
    with pytest.raises(SpecError, match=r"^command line: .*\n  job_id"):
        _run_spec("--job-id", "")
    path = _write(tmp_path / "j.yaml", "output: o\n")
    with pytest.raises(SpecError, match=f"^{path}: "):
        _run_spec("--spec", str(path), "--job-id", "")


def test_from_yaml_merges_sections_one_level_and_defaults_only_fill_gaps(tmp_path):
    path = _write(
        tmp_path / "s.yaml",
        "manifest: l.txt\noutput: o\nstage1: {batch_size: 4, resources: {a: 1}}\n",
    )
    spec = JobSpec.from_yaml(
        path,
        {"stage1": {"actors": 2, "resources": {"b": 1}}},
        defaults={"inputs": ["x.jpg"], "output": "out", "job_id": "d"},
    )
    assert (spec.stage1.batch_size, spec.stage1.actors) == (4, 2)
    assert spec.stage1.resources == {"b": 1.0}  # one level: a nested mapping is replaced
    assert (spec.manifest, spec.inputs, spec.output, spec.job_id) == ("l.txt", (), "o", "d")


def test_join_uri_keeps_schemes_and_never_doubles_slashes():
    from schemas.spec import join_uri

    assert join_uri("s3://b/out/", "job", "/stats.json") == "s3://b/out/job/stats.json"
    assert join_uri("/data", "a.jpg") == "/data/a.jpg"
    assert join_uri("/", "a.jpg") == "/a.jpg"
    assert join_uri("", "a.jpg") == "a.jpg"


def test_refiner_crop_settings_default_to_the_networks_own_and_need_a_top_down_refiner():
    spec = JobSpec.parse({"inputs": ["a.jpg"], "output": "o"})
    assert (spec.refiner.crop_padding, spec.refiner.guide) == (None, None)  # the network's
    thunder = stage_adapter("refiner", spec.refiner)
    settings = stage_settings("refiner", spec, thunder)
    assert (thunder.crop_padding, settings.guide) == (1.0, "pose")
    assert spec.refiner.second_crop_padding is None
    assert spec.decode.exposure == "auto"
    demo = JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "refiner": {"model": "detposenet"}})
    assert demo.refiner.model == "detposenet"  # the defaults do not get in the way
    check_weights(demo)
    boxed = {"model": "detposenet", "guide": "box"}
    with pytest.raises(JobSetupError, match=r"refiner\.guide do not apply to .*'detposenet'"):
        check_weights(JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "refiner": boxed}))
    with pytest.raises(SpecError, match="guide"):
        JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "refiner": {"guide": "nearest"}})
    with pytest.raises(SpecError, match="crop_padding"):
        JobSpec.parse({"inputs": ["a.jpg"], "output": "o", "refiner": {"crop_padding": 0.5}})
