"""The package's version, in a module of its own: the exporters' User-Agent and the CLI read it
while the package is still being imported, when ``taskscope.__version__`` does not exist yet."""

__version__ = "0.1.0"
