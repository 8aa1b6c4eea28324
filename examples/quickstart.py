"""Quick start in Python: load data, train the default recipe, reload the model, predict.

Run: python examples/quickstart.py [--dataset digits|idx:../shared/data/mnist] [--epochs N]
"""

import argparse

import keras
import numpy as np

import recipes


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=recipes.Recipe().epochs)
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args()

    data = recipes.load_data(args.dataset, batch_size=64)
    print(f"{args.dataset}: {data.sizes} images, {data.num_classes} classes, shape {data.input_shape}")
    result = recipes.train(data=data, epochs=args.epochs, out=args.out, verbose=2)
    print("test metrics:", {k: round(v, 4) for k, v in result.metrics.items()})

    model = keras.models.load_model(f"{args.out}/model.keras")  # no custom_objects needed
    images, labels = next(iter(data.test))
    predicted = np.argmax(model.predict(images, verbose=0), axis=-1)
    print(f"reloaded model: {np.mean(predicted == labels.numpy()):.3f} accuracy on one test batch")


if __name__ == "__main__":
    main()
