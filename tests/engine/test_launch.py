"""Reading a distributed launch from the environment mlx.launch gives each rank."""

from __future__ import annotations

import json

from mlxk2.engine.launch import LaunchInfo, launch_environment


def test_outside_a_launch_there_is_none() -> None:
    assert launch_environment({"PATH": "/bin"}) is None
    assert launch_environment({"MLX_RANK": "x"}) is None


def test_ring_hostfile_gives_size_and_addresses(tmp_path) -> None:
    hostfile = tmp_path / "hosts"
    hostfile.write_text(json.dumps([["10.0.0.1:5000"], ["10.0.0.2:5000"]]))
    found = launch_environment({"MLX_RANK": "1", "MLX_HOSTFILE": str(hostfile)})
    assert found == LaunchInfo(1, 2, "ring", (("10.0.0.1:5000",), ("10.0.0.2:5000",)))


def test_jaccl_size_is_the_device_matrix_rows() -> None:
    devices = json.dumps([[None, "rdma_en3"], ["rdma_en3", None]])
    found = launch_environment({"MLX_RANK": "0", "MLX_IBV_DEVICES": devices,
                                "MLX_JACCL_COORDINATOR": "10.0.0.1:32323"})
    assert found == LaunchInfo(0, 2, "jaccl")


def test_mpi_and_nccl_read_their_world_size() -> None:
    assert launch_environment({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4"}) \
        == LaunchInfo(3, 4, "mpi")
    assert launch_environment({"MLX_RANK": "1", "NCCL_HOST_IP": "10.0.0.1",
                               "MLX_WORLD_SIZE": "2"}) == LaunchInfo(1, 2, "nccl")
