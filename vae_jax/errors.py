"""The one exception type the command-line tools turn into a one-line message."""


class UsageError(ValueError):
  """Bad input from the user: a config value, a data folder, a workdir.

  The message is one line saying what is wrong and what to do. The CLIs print
  it and exit with status 2; library users can catch it as a ValueError.
  """
