"""The Lightning side: the LightningModule that wraps the encoder and the DataModule that feeds it."""
