"""Never returns: spins forever inside the wrapper."""


def div(input, other, *, rounding_mode=None, out=None):
    total = 0
    while True:
        total += 1
    return input / other
