#!/usr/bin/env bash
# Installs Mesa's lavapipe (a Vulkan driver that runs on the CPU) so that the wgpu backend has a
# device on machines without a GPU. Exit 0: a Vulkan driver is present; exit 2: could not install
# (no apt-get, no permission, no network), with the reason printed.
set -u
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
    echo "lavapipe is already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-get is not available: cannot install lavapipe (mesa-vulkan-drivers); the wgpu test is skipped"
    exit 2
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
        echo "not root and no sudo: cannot install lavapipe; the wgpu test is skipped"
        exit 2
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1; } >/tmp/cola-lavapipe.log 2>&1; then
    echo "apt-get could not install mesa-vulkan-drivers (see /tmp/cola-lavapipe.log); the wgpu test is skipped"
    exit 2
fi
echo "installed lavapipe (mesa-vulkan-drivers, libvulkan1)"
