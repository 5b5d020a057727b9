"""Wrong signature: the wrapper takes a single argument."""


def div(input):
    return input / 2
