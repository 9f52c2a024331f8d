"""``python -m rfr_deploy.cli``: the ``rfr-deploy`` command line."""

from rfr_deploy.cli import main

if __name__ == "__main__":
    main()
