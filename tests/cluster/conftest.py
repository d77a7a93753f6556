"""Registers the `cluster` marker here too, so this folder runs under --strict-markers as is."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cluster: runs cluster/four_node.yaml and cluster/README.md on four local hosts "
        "(network namespaces + sshd; root only)",
    )
