"""topgrad-float64: a Topgrad backend that computes in float64 numpy, for gradient checking."""
