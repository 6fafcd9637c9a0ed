"""Weight import and export: TFLite, MindSpore .ckpt and torchvision .pth to and from binwise."""
