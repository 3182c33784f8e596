"""gin-driven experiments for lossjax (CIFAR / Fashion-MNIST / digits). gin lives only here."""
