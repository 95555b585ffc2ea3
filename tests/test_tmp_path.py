"""The suite's `tmp_path` (conftest.py): a passing test's directory goes at once, a
failing test's stays for inspection."""
import pathlib

pytest_plugins = ["pytester"]

CONFTEST = pathlib.Path(__file__).parent / "conftest.py"


def test_a_passing_tests_tmp_path_is_removed_and_a_failing_ones_kept(pytester):
  pytester.makeconftest(CONFTEST.read_text())
  record = pytester.path / "paths.txt"
  pytester.makepyfile(f"""
      import pytest

      def _write(tmp_path, name):
        (tmp_path / "checkpoint.bin").write_bytes(b"0" * 1024)
        with open({str(record)!r}, "a") as f:
          f.write(name + " " + str(tmp_path) + "\\n")

      def test_passes(tmp_path):
        _write(tmp_path, "passes")

      def test_fails(tmp_path):
        _write(tmp_path, "fails")
        assert False

      @pytest.mark.skip(reason="never runs")
      def test_skipped(tmp_path):
        pass
  """)
  result = pytester.runpytest("-p", "no:cacheprovider")
  result.assert_outcomes(passed=1, failed=1, skipped=1)
  paths = dict(line.split(" ", 1) for line in record.read_text().splitlines())
  assert not pathlib.Path(paths["passes"]).exists()
  assert pathlib.Path(paths["fails"], "checkpoint.bin").exists()
