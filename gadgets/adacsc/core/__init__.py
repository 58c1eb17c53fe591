"""The torch reconstruction core: dictionaries, operators, the CSC solver and NET_Theta."""
