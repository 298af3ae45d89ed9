"""Data: Fashion-MNIST, CIFAR, ImageFolder, augmentation, the trainer's splits."""
