"""Is the network there? Checked in seconds, before a download is tried.

The downloading paths call `require_online` first, so that an offline machine
fails in seconds with the list of files to put in `manual_dir`, instead of
TFDS (or the Hub client) retrying for minutes.
"""
from __future__ import annotations

import os
import threading
import urllib.error
import urllib.parse
import urllib.request

# Set to 1/true/yes to make every downloading path fail at once.
OFFLINE_ENV = "OPTICAL_JAX_OFFLINE"
# Honoured for Hugging Face hosts only (they mean "no Hub").
HF_OFFLINE_ENVS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
HF_HOSTS = ("huggingface.co", "hf.co")
NETWORK_TIMEOUT_S = 3.0


class OfflineError(ConnectionError):
  """A download was needed and the network is not there; says what to put where."""


def _truthy(value: str | None) -> bool:
  return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason(url: str, timeout: float | None = None) -> str | None:
  """Why `url` cannot be fetched now, or None when a HEAD request for it succeeds.

  `url` may be a bare host (`huggingface.co`); `timeout` defaults to
  `NETWORK_TIMEOUT_S` (3 s). Checks, in order:
  `OPTICAL_JAX_OFFLINE`; `HF_HUB_OFFLINE` / `HF_DATASETS_OFFLINE` for Hugging
  Face hosts; an HTTP HEAD request for `url` (through the proxy of
  `https_proxy`, when set) that must succeed (after redirects): an error status
  (a gateway's 404, a gated file's 401) means the download would fail too. The
  request, name resolution and redirects included, runs in a daemon thread
  given `timeout` seconds in all, so neither a hanging DNS lookup nor a network
  that accepts connections and never answers can stall the caller.
  """
  timeout = NETWORK_TIMEOUT_S if timeout is None else timeout
  if "://" not in url:
    url = f"https://{url}/"
  host = urllib.parse.urlsplit(url).hostname or url
  if _truthy(os.environ.get(OFFLINE_ENV)):
    return f"offline: {OFFLINE_ENV}={os.environ[OFFLINE_ENV]} is set"
  if any(host == h or host.endswith("." + h) for h in HF_HOSTS):
    for env in HF_OFFLINE_ENVS:
      if _truthy(os.environ.get(env)):
        return f"offline: {env}={os.environ[env]} is set"
  outcome: list[str | None] = []

  def probe():
    request = urllib.request.Request(url, method="HEAD",
                                     headers={"User-Agent": "optical_jax-netcheck"})
    try:
      with urllib.request.urlopen(request, timeout=timeout):
        outcome.append(None)
    except urllib.error.HTTPError as e:  # answered, but the download would fail
      outcome.append(f"{host} answered HTTP {e.code} {e.reason}")
    except (urllib.error.URLError, OSError, ValueError) as e:
      outcome.append(f"cannot reach {host} ({getattr(e, 'reason', None) or e})")

  thread = threading.Thread(target=probe, daemon=True, name=f"netcheck-{host}")
  thread.start()
  thread.join(timeout)
  if not outcome:
    return f"no answer from {host} within {timeout:g} s"
  return outcome[0]


def is_online(url: str, timeout: float | None = None) -> bool:
  """Whether `url` (or a bare host) can be fetched, told within `timeout` s."""
  return offline_reason(url, timeout) is None


def require_online(url: str, instructions: str, timeout: float | None = None) -> None:
  """Raises `OfflineError` (with `instructions`) unless `url` can be fetched.

  Args:
    url: what is about to be downloaded.
    instructions: what to do instead: the files to put in which directory.
  """
  reason = offline_reason(url, timeout)
  if reason is not None:
    raise OfflineError(f"cannot download {url}: {reason}.\n{instructions}")
