"""The command line and the tools on top of everything: `streamstyle` (cli), the demo, the
benchmark and its peers, and the child-service launcher they share. Nothing below imports this
package: the service, the model, the contract and the engines stand on their own."""
