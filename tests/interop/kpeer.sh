#!/usr/bin/env bash
# Sourced by the interop scripts: sets KPEER_HOME to the kernel-peer kit to use.
_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -z "${KPEER_HOME:-}" ]; then
    if [ -x "$_repo/../shared/kernel-peer/run" ]; then
        KPEER_HOME="$_repo/../shared/kernel-peer"
    else
        KPEER_HOME="$_repo/tools/kernel-peer"
    fi
fi
export KPEER_HOME
