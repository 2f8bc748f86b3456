from setuptools import find_packages, setup

# One DuckDB version for the Python package, the CLI Sling drives, and the extensions:
# a file written by a newer DuckDB cannot be opened by an older CLI.
DUCKDB = "1.5.5"

setup(
    name="elt_repo",
    version="0.1.0",
    description="A Dagster code location built from a Git repository of dlt and Sling pipelines",
    packages=find_packages(exclude=["tests", "tests.*", "bench", "examples"]),
    python_requires=">=3.10",
    install_requires=[
        "dagster>=1.13,<1.14",
        "dagster-webserver>=1.13,<1.14",
        "dagster-graphql>=1.13,<1.14",  # reloads the code location after a new commit
        "dagster-dlt>=0.29,<0.30",
        "dagster-sling>=0.29,<0.30",
        "dlt[duckdb,parquet]>=1.20",
        f"duckdb=={DUCKDB}",
        # Sling's PyPI wrapper downloads its binary at run time; ship the platform wheel instead.
        "sling>=1.4",
        "sling-linux-amd64>=1.4.11; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "sling-linux-arm64>=1.4.11; platform_system == 'Linux' and platform_machine == 'aarch64'",
        # Sling's DuckDB target needs a CLI and extensions; ship them instead of downloading.
        f"duckdb-cli=={DUCKDB}",
        f"duckdb-extension-json=={DUCKDB}",
        f"duckdb-extension-httpfs=={DUCKDB}",
        "gitpython>=3.2",  # older releases have clone/option-injection CVEs
        "marshmallow>=4",
        "PyYAML>=6",
        "tenacity>=8.2",
        "croniter>=2",  # cron validation in the schema layer, which never imports dagster
    ],
    extras_require={
        # pytest-timeout: a hung tool process fails its test with the stacks, not the 90-minute CI job.
        # pandas: dlt's filesystem read_csv needs it, and the docs-style test pipelines use it.
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "pandas>=2"],
        # Postgres for the Dagster instance (dagster-postgres, deploy/dagster.yaml), for the
        # warehouse (dlt's postgres destination, which drives psycopg2) and for dlt's
        # sql_database sources (Sling's binary brings its own driver). SQLAlchemy 2.1 maps a
        # plain postgresql://user:pass@host/db URL to psycopg 3; 2.0 mapped it to psycopg2,
        # which is why the lower bound is 2.1 and not 2.
        "postgres": [
            "dagster-postgres>=0.29,<0.30",
            "dlt[sql_database,postgres]>=1.20",
            "sqlalchemy>=2.1",
            "psycopg[binary]>=3.2",
            "psycopg2-binary>=2.9",
        ],
    },
)
