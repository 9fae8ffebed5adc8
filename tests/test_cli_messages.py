"""Messages a new user meets first say what is wrong and how to fix it (issue 28, item 10)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from bench import registry
from bench.cli import main
from bench.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


# -- BENCH_PLUGINS ---------------------------------------------------------------------
def _populate_again(monkeypatch, plugins: str) -> None:
    monkeypatch.setenv("BENCH_PLUGINS", plugins)
    monkeypatch.setattr(registry, "_populated", False)  # restored after the test


def test_a_plugin_not_on_the_path_is_one_line_naming_the_variable_module_and_fix(monkeypatch, capsys):
    _populate_again(monkeypatch, "my_plugin_nowhere")
    assert main(["ls", "methods"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("bench ls: error: BENCH_PLUGINS names module 'my_plugin_nowhere'")
    assert "PYTHONPATH" in err and "pip install -e" in err
    # the next call fails the same way instead of running without the plugin
    with pytest.raises(registry.PluginImportError, match="my_plugin_nowhere"):
        registry.methods()


def test_a_missing_submodule_of_an_importable_package_says_to_check_the_name(monkeypatch):
    _populate_again(monkeypatch, "tests.plugin_stagez")
    with pytest.raises(registry.PluginImportError, match=r"package 'tests' is importable but has no module 'plugin_stagez'"):
        registry.populate()


def test_a_plugin_whose_own_import_fails_keeps_its_traceback(monkeypatch, tmp_path):
    (tmp_path / "broken_plugin_x.py").write_text("import some_dependency_nowhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _populate_again(monkeypatch, "broken_plugin_x")
    with pytest.raises(ModuleNotFoundError) as info:
        registry.populate()
    assert info.value.name == "some_dependency_nowhere" and not isinstance(info.value, registry.PluginImportError)


# -- overrides: key path and registered method name ---------------------------------------
CONFIG = """
[profiles.smoke]
methods = ["beta-vae"]
datasets = ["dsprites-procedural-32"]
seeds = [0]
[profiles.smoke.overrides."*"]
steps = {steps}
[profiles.smoke.overrides.beta-vae]
beta = {beta}
[profiles.smoke.sweep.beta-vae]
latent_dim = [4, 8]
"""


def _error(tmp_path: Path, steps: str = "10", beta: str = "4.0") -> str:
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(CONFIG.format(steps=steps, beta=beta)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_a_star_override_type_error_names_the_key_path_and_the_registered_method(tmp_path):
    message = _error(tmp_path, steps='"ten"')
    assert 'profiles.smoke.overrides."*".steps: ' in message
    assert "method 'beta-vae'" in message and "BetaVAE" not in message
    assert "hyperparameter 'steps' must be int" in message


def test_a_method_override_error_names_its_own_table(tmp_path):
    message = _error(tmp_path, beta='"x"')
    assert "profiles.smoke.overrides.beta-vae.beta: " in message and "method 'beta-vae'" in message
    assert "BetaVAE" not in message
    message = _error(tmp_path, steps="-1")  # a range error, checked before the sweep that includes it
    assert 'profiles.smoke.overrides."*".steps: ' in message and "out of range" in message


def test_an_unknown_star_override_names_its_path(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(textwrap.dedent(CONFIG.format(steps="10", beta="4.0")).replace("steps = 10", "stepz = 10"))
    with pytest.raises(ConfigError, match=r'overrides\."\*"\.stepz: method \'beta-vae\'.*did you mean \'steps\'') as info:
        load_config(path)
    assert "BetaVAE" not in str(info.value)


def test_a_bad_set_value_names_the_set_item_not_only_the_file(tmp_path, capsys):
    config = tmp_path / "bench.toml"
    config.write_text('[profiles.s]\nmethods = ["ae"]\ndatasets = ["dsprites-procedural-32"]\nseeds = [0]\n')
    for item, detail in (("overrides.ae.steps=many", "must be int"), ('overrides."*".steps=many', "must be int"),
                         ("metric_params.dci.num_train=-1", "out of range"), ("seeds=[0, 'a']", "seeds must be")):
        with pytest.raises(ConfigError) as info:
            load_config(config, sets=[item])
        message = str(info.value)
        assert message.startswith(f"--set {item!r} (profile 's' of {config}): ") and detail in message, message
    assert main(["run", "--config", str(config), "--dry-run", "--set", "overrides.ae.steps=many"]) == 2
    assert "error: --set 'overrides.ae.steps=many'" in capsys.readouterr().err


# -- bench score --help ------------------------------------------------------------------
RST = re.compile(r"``|:[a-z]+(:[a-z]+)?:`")


def test_score_help_shows_no_rst_markup(capsys):
    with pytest.raises(SystemExit) as info:
        main(["score", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "bench score CODES.npz: score a representation computed anywhere." in out
    assert not RST.search(out), out
    # the whole explanation, not its first paragraph: what each kind of column gives, how rows are drawn
    assert "* codes alone → gaussian_tc, mutual_info" in out and "Every metric group starts from" in out
    assert "* factors → mig, sap" in out  # a bullet stays a bullet (not re-wrapped into the paragraph)
    assert "--no-progress" in out


def test_run_help_says_what_no_progress_prints(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "hide progress bars" not in out
    assert "--no-progress no progress bars: one plain line per finished stage" in out and "step and loss" in out


def test_plain_text_renders_the_whole_module_docstring():
    from bench import score

    text = score.plain_text(score.__doc__)
    assert not RST.search(text) and "**" not in text
    assert "dci_*, modularity" in text  # a literal's own characters are kept
    assert "wrapped in\n  TableFactorDataset," in text  # :class:`~a.b.C` → C
    assert "(format and validation: bench.codes_file)" in text
    assert "\n* codes alone → gaussian_tc" in text  # bullets stay bullets


# -- README ------------------------------------------------------------------------------
def test_readme_using_it_says_to_activate_the_venv_first():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Using it", 1)[1].split("```bash", 1)[0]
    assert "source .venv/bin/activate" in section and ".venv/bin/bench" in section


def test_the_docs_of_bench_status_say_failures_show_whole_reasons_grouped():
    from bench import status

    section = (REPO / "README.md").read_text().split("`bench status` reads only the store", 1)[1].split("###", 1)[0]
    for text in (section, status.__doc__):
        flat = " ".join(text.split())
        assert "first line of the reason" not in flat and "whole reason" in flat and "count" in flat


def test_readme_says_that_k_is_a_substring_match_and_how_to_select_one_method():
    step = (REPO / "README.md").read_text().split("## Adding a method", 1)[1].split("## ", 1)[0]
    flat = " ".join(step.split())
    assert "substring match" in flat and '-k "[my-method]"' in flat


def test_a_closed_pipe_ends_a_listing_quietly():
    """`bench run --dry-run | head -1` on a big grid: no BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--dry-run", "--profile", "dlib-study-dsprites"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(Path(__file__).parents[1]))
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_registry_name_that_is_not_a_string_is_a_clear_error():
    from bench import registry
    from bench.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="must be a string, got None"):
        registry.methods().get(None)
