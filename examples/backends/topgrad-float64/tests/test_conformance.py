import topgrad.testing


class TestFloat64(topgrad.testing.BackendConformance):
    backend = "float64"
    rtol = 1e-12
